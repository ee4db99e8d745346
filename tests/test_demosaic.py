"""Demosaicers, the reference look and the on-disk reference cache."""

import multiprocessing as mp

import colour_demosaicing as cd
import numpy as np
import pytest

from isp_search.data.cache import content_key, reference_store
from isp_search.data.demosaic import DEMOSAICERS, ReferenceLook, demosaic, demosaic_reference
from isp_search.data.io import read_raw, write_raw
from isp_search.registry import UnknownNameError


def _mosaic_of(rgb: np.ndarray) -> np.ndarray:
    """RGGB mosaic sampling an (H, W, 3) image."""
    m = np.empty(rgb.shape[:2], rgb.dtype)
    m[0::2, 0::2] = rgb[0::2, 0::2, 0]
    m[0::2, 1::2] = rgb[0::2, 1::2, 1]
    m[1::2, 0::2] = rgb[1::2, 0::2, 1]
    m[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return m


@pytest.fixture(scope="module")
def noisy_raw():
    return np.random.default_rng(0).integers(0, 1024, (32, 48)).astype(np.uint16)


@pytest.mark.parametrize("name", DEMOSAICERS.names())
def test_demosaicer_shape_and_reference_range(name, noisy_raw):
    out = demosaic(noisy_raw, name)
    assert out.shape == (32, 48, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    ref = demosaic_reference(noisy_raw, name, ReferenceLook(), out_size=(16, 24))
    assert ref.shape == (16, 24, 3) and ref.dtype == np.float32
    assert ref.min() >= 0.0 and ref.max() <= 1.0


@pytest.mark.parametrize("name", DEMOSAICERS.names())
def test_demosaicer_keeps_rggb_colours(name):
    # A flat colour: every demosaicer must give it back away from the border. If the OpenCV Bayer code were the
    # wrong one for RGGB, red and blue would come back swapped.
    colour = np.array([800.0, 400.0, 150.0])
    raw = _mosaic_of(np.broadcast_to(colour, (24, 24, 3)).copy()).astype(np.uint16)
    out = demosaic(raw, name)[4:-4, 4:-4]
    tol = 1023 / 255 if name == "opencv_vng" else 1.0  # VNG runs on 8-bit values
    assert np.abs(out - colour).max() <= tol


def test_opencv_ea_red_blue_edge():
    # Left half red, right half blue: a swapped pattern would put blue on the left.
    rgb = np.zeros((16, 16, 3))
    rgb[:, :8, 0] = 900
    rgb[:, 8:, 2] = 900
    out = demosaic(_mosaic_of(rgb).astype(np.uint16), "opencv_ea")
    assert out[4:12, 2:5, 0].mean() > 800 and out[4:12, 2:5, 2].mean() < 100
    assert out[4:12, 11:14, 2].mean() > 800 and out[4:12, 11:14, 0].mean() < 100


@pytest.mark.parametrize(
    "name, fn",
    [
        ("menon2007", cd.demosaicing_CFA_Bayer_Menon2007),
        ("malvar2004", cd.demosaicing_CFA_Bayer_Malvar2004),
        ("bilinear", cd.demosaicing_CFA_Bayer_bilinear),
    ],
)
def test_colour_wrappers_equal_direct_calls(name, fn, noisy_raw):
    direct = fn(noisy_raw.astype(np.float64), "RGGB")
    np.testing.assert_allclose(demosaic(noisy_raw, name), direct, rtol=1e-6, atol=1e-3)


def test_unknown_demosaicer():
    with pytest.raises(UnknownNameError, match="menon2007"):
        demosaic(np.zeros((4, 4)), "menon")


def test_look_on_hand_values():
    rgb = np.array([[[250.0, 1000.0, 2000.0]]], np.float32)
    plain = ReferenceLook(gains=(1.0, 1.0, 1.0), divisor=1000.0, stretch=False, gamma=2.0).apply(rgb)
    np.testing.assert_allclose(plain[0, 0], [0.5, 1.0, 1.0], rtol=1e-6)  # /1000, clip, sqrt

    # Default (the authors' code, docs/method.md §4.2): /65535, gains (1.6, 1.2, 1.4), clip, per-image min-max
    # stretch, gamma 1/2.2.
    rgb = np.array([[[100.0, 200.0, 300.0], [1000.0, 500.0, 0.0]]], np.float32)
    scaled = rgb / 65535 * np.array([1.6, 1.2, 1.4])
    want = ((scaled - scaled.min()) / (scaled.max() - scaled.min())) ** (1 / 2.2)
    np.testing.assert_allclose(ReferenceLook().apply(rgb), want, rtol=1e-5, atol=1e-6)
    assert ReferenceLook().divisor == 65535.0 and ReferenceLook().gains == (1.6, 1.2, 1.4)
    assert ReferenceLook().apply(np.ones((8, 8, 3)), out_size=(4, 2)).shape == (4, 2, 3)


def _build(args):
    paths, cache_dir = args
    store = reference_store(paths, "menon2007", ReferenceLook(), None, cache_dir)
    return str(store.folder), np.stack([store[i] for i in range(len(store))])


def test_cache_two_processes_build_the_same_store(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        write_raw(p, rng.integers(0, 1024, (64, 64)).astype(np.uint16))
        paths.append(str(p))
    cache = tmp_path / "cache"
    with mp.get_context("spawn").Pool(2) as pool:
        (f1, a1), (f2, a2) = pool.map(_build, [(paths, str(cache))] * 2)
    assert f1 == f2 and np.array_equal(a1, a2)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [cache.joinpath(f1).name]  # no leftovers
    want = demosaic_reference(read_raw(paths[3]), "menon2007")
    assert np.abs(a1[3] - want).max() <= 1 / 65535 + 1e-7  # stored as uint16
    parallel = reference_store(paths, "menon2007", ReferenceLook(), None, tmp_path / "cache2", workers=2)
    assert np.array_equal(np.stack([parallel[i] for i in range(len(parallel))]), a1)
    # Same inputs -> the cached folder; another demosaicer or look -> another key.
    assert _build((paths, str(cache)))[0] == f1
    k = content_key(paths, "menon2007", ReferenceLook(), None)
    assert k != content_key(paths, "bilinear", ReferenceLook(), None)
    assert k != content_key(paths, "menon2007", ReferenceLook(gains=(1, 1, 1)), None)
