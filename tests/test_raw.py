"""The RAW layer: CFA geometry, (B, Gb, R, Gr) packing, RMFA planes and normalisation presets."""

import pytest
import torch

from isp_search.raw import CFA, PRESETS, RAW_MAX, from_packed, from_planes, get_preset, to_packed, to_planes
from isp_search.registry import UnknownNameError


@pytest.mark.parametrize("cfa", list(CFA))
def test_packing_round_trip(cfa):
    raw = torch.randint(0, RAW_MAX + 1, (2, 3, 8, 12)).float()
    packed = to_packed(raw, cfa)
    assert packed.shape == (2, 3, 4, 4, 6)
    assert torch.equal(from_packed(packed, cfa), raw)


@pytest.mark.parametrize("cfa", list(CFA))
def test_planes_round_trip_and_fill(cfa):
    raw = torch.randint(0, RAW_MAX + 1, (6, 10)).float()
    planes = to_planes(raw, cfa, fill=1.0)
    assert planes.shape == (3, 6, 10)
    assert torch.equal(from_planes(planes, cfa), raw)
    # Each pixel is a real sample in exactly one plane; the other two hold the fill value.
    assert torch.equal((planes != 1.0).sum(0) <= 1, torch.ones(6, 10, dtype=torch.bool))
    ry, rx = cfa.red
    assert torch.equal(planes[0, ry::2, rx::2], raw[ry::2, rx::2])
    assert torch.all(planes[0, 1 - ry :: 2, :] == 1.0)


def test_packed_order_on_hand_made_mosaic():
    raw = torch.arange(16.0).reshape(4, 4)  # RGGB: R at (0,0), Gb at (0,1), Gr at (1,0), B at (1,1)
    packed = to_packed(raw)
    assert packed[0].tolist() == [[5, 7], [13, 15]]  # B = raw[1::2, 1::2]
    assert packed[1].tolist() == [[1, 3], [9, 11]]  # Gb = raw[0::2, 1::2]
    assert packed[2].tolist() == [[0, 2], [8, 10]]  # R = raw[0::2, 0::2]
    assert packed[3].tolist() == [[4, 6], [12, 14]]  # Gr = raw[1::2, 0::2]


def test_cfa_geometry():
    assert CFA.RGGB.red == (0, 0) and CFA.BGGR.red == (1, 1) and CFA.GRBG.red == (0, 1) and CFA.GBRG.red == (1, 0)
    for cfa in CFA:
        assert CFA.from_red(*cfa.red) is cfa
        (by, bx), (gy, gx), (ry, rx), _ = cfa.offsets
        assert cfa.value[2 * ry + rx] == "R" and cfa.value[2 * by + bx] == "B"
        assert gy == ry and cfa.value[2 * gy + gx] == "G"  # channel 1 is the green on the red row


def test_odd_sides_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="even"):
        to_packed(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="packed"):
        from_packed(torch.zeros(3, 2, 2))


def test_paper_preset_per_channel_levels():
    p = get_preset("paper")
    packed = torch.tensor([100.0, 100.0, 100.0, 100.0])[:, None, None].expand(4, 2, 2)
    want = [(100 - 62) / (1023 - 62), (100 - 60) / (1023 - 60), (100 - 58) / (1023 - 58), (100 - 61) / (1023 - 61)]
    out = p.normalize_packed(packed)
    assert torch.allclose(out[:, 0, 0], torch.tensor(want))
    assert torch.allclose(p.normalize_packed(torch.full((4, 1, 1), 1023.0)), torch.ones(4, 1, 1))
    assert p.normalize_packed(torch.full((4, 1, 1), 10.0)).min() < 0  # no clamp
    assert torch.allclose(p.denormalize_packed(out), packed)
    # On a mosaic each site uses its own channel's level: R (0,0) -> 58, Gb (0,1) -> 60, Gr (1,0) -> 61, B -> 62.
    m = p.normalize_mosaic(torch.full((2, 2), 100.0))
    assert torch.allclose(m, torch.tensor([[want[2], want[1]], [want[3], want[0]]]))


def test_pynet_and_rmfa_presets():
    x = torch.tensor([0.0, 50.0, 563.0, 1023.0])[None, :, None].expand(4, 4, 1)
    assert torch.allclose(get_preset("pynet").normalize_packed(x)[0, :, 0], torch.tensor([0, 50, 563, 1023]) / 1020)
    rm = get_preset("rmfa").normalize_packed(x)[0, :, 0]
    assert torch.allclose(rm, torch.tensor([0.0, 0.0, 500 / 1023, 960 / 1023]))  # clamped at the black level


def test_unknown_preset_suggests():
    assert PRESETS.names() == ["paper", "pynet", "rmfa"]
    with pytest.raises(UnknownNameError, match="did you mean 'paper'"):
        get_preset("papr")
