"""Data formats, carving, pairing, CFA-safe augmentation, the dataset, synthetic data and ``data check``."""

import hashlib
import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from datasets import dataset

from isp_search.data.augment import DIHEDRAL, augment_sample, cfa_after
from isp_search.data.dead_leaves import dead_leaves, leaf_radii
from isp_search.data.formats import FORMATS
from isp_search.data.io import write_raw, write_rgb
from isp_search.data.pairing import PAIRINGS, make_pairing
from isp_search.data.photos import NOT_PHOTOGRAPHIC, PHOTO_SPLITS, PHOTOS, load_photo, photo_file
from isp_search.data.splits import Splits, carve_splits
from isp_search.data.synth import MARKER, SAMPLES, ensure_synthetic, split_stats, synthesize
from isp_search.errors import UserError
from isp_search.raw import CFA

REPO = Path(__file__).resolve().parents[1]


def _write_pair(raw_path: Path, rgb_path: Path | None, i: int, size: int = 16) -> None:
    rng = np.random.default_rng(i)
    write_raw(raw_path, rng.integers(0, 1024, (size, size)).astype(np.uint16))
    if rgb_path is not None:
        # The RGB's mean encodes the id, so a test can tell which photo became the target.
        write_rgb(rgb_path, np.full((size, size, 3), (i % 50) / 50 + 0.01))


def make_layout(root: Path, fmt: str, counts: dict[str, int], rgb_splits=("train", "val", "test")) -> Path:
    """A data set in ``fmt``'s real layout with counts[split] pairs (RGB only in ``rgb_splits``)."""
    f = FORMATS.get(fmt)
    ext = ".jpg" if fmt == "zrr" else ".png"
    for split, n in counts.items():
        (root / split / f.raw_dir).mkdir(parents=True)
        if split in rgb_splits:
            (root / split / f.rgb_dir).mkdir(parents=True)
        for i in range(n):
            rgb = root / split / f.rgb_dir / f"{i}{ext}" if split in rgb_splits else None
            _write_pair(root / split / f.raw_dir / f"{i}.png", rgb, i)
    return root


def test_zrr_lists_numerically_and_carves_val(tmp_path):
    root = make_layout(tmp_path, "zrr", {"train": 24, "test": 3})
    listing = FORMATS.get("zrr").list_split(root, "train")
    assert [s.id for s in listing.samples] == list(range(24))  # 10 after 9, not after 1
    assert all(s.rgb_path.name == f"{s.id}.jpg" for s in listing.samples) and listing.paired
    splits = carve_splits(root, "zrr", seed=0)
    assert splits.parts["val"].source == "train" and len(splits.parts["val"].ids) == 3  # 24 // 8
    assert splits.parts["test"].source == "test" and splits.parts["test"].ids == (0, 1, 2)
    assert set(splits.parts["train"].ids).isdisjoint(splits.parts["val"].ids)
    assert len(splits.parts["train"].ids) == 21


def test_mai2022_raw_only_val_is_carved(tmp_path):
    root = make_layout(tmp_path, "mai2022", {"train": 20, "val": 5}, rgb_splits=("train",))
    assert not FORMATS.get("mai2022").list_split(root, "val").paired  # the published val has no fujifilm/
    splits = carve_splits(root, "mai2022", seed=3, n_val=4, n_test=4)
    assert {k: v.source for k, v in splits.parts.items()} == {"train": "train", "val": "train", "test": "train"}
    ids = [set(splits.parts[k].ids) for k in ("train", "val", "test")]
    assert sum(map(len, ids)) == 20 and len(set().union(*ids)) == 20
    assert splits.listing(root, "val").paired


def test_folder_format_unpaired_train_paired_val(tmp_path):
    for d in ("train/raw", "train/rgb", "val/raw", "val/rgb"):
        (tmp_path / d).mkdir(parents=True)
    for i in range(4):
        _write_pair(tmp_path / f"train/raw/shot{i}.png", None, i)
    for i in range(7):
        write_rgb(tmp_path / f"train/rgb/photo{i}.jpg", np.full((20, 24, 3), 0.5))
    for i in range(2):
        _write_pair(tmp_path / f"val/raw/{i}.png", tmp_path / f"val/rgb/{i}.png", i)
    train = FORMATS.get("folder").list_split(tmp_path, "train")
    assert len(train.samples) == 4 and len(train.rgb_pool) == 7 and not train.paired
    ds = dataset(tmp_path, "folder", "train", "efficient_isp", pairing="disjoint", with_reference=False)
    item = ds[0]
    assert "paired_target" not in item and item["target"].shape == (3, 16, 16)  # photos cropped to RAW size
    with pytest.raises(UserError, match="paired"):
        dataset(tmp_path, "folder", "train", "efficient_isp", pairing="paired", with_reference=False)
    val = dataset(tmp_path, "folder", "val", "rmfa_tiny", with_reference=False)
    assert val[1]["input"].shape == (3, 16, 16) and torch.equal(val[1]["target"], val[1]["paired_target"])


def test_missing_counterpart_names_the_file(tmp_path):
    root = make_layout(tmp_path, "mai2022", {"train": 4})
    (root / "train/fujifilm/2.png").unlink()
    with pytest.raises(UserError, match=r"missing RGB counterpart for .*mediatek_raw/2\.png"):
        FORMATS.get("mai2022").list_split(root, "train")


def test_carving_is_seeded_recorded_and_honours_exclude(tmp_path):
    root = make_layout(tmp_path / "d", "zrr", {"train": 40, "test": 2})
    exclude = tmp_path / "bad.txt"
    exclude.write_text("# misaligned\n3\n17\n")
    record = tmp_path / "run" / "splits.json"
    a = carve_splits(root, "zrr", seed=1, n_val=5, exclude=exclude, record=record)
    assert record.is_file() and json.loads(record.read_text())["splits"]["val"]["ids"] == list(a.parts["val"].ids)
    assert a.excluded == (3, 17)
    used = {i for k in ("train", "val") for i in a.parts[k].ids}
    assert used.isdisjoint({3, 17}) and len(used) == 38
    assert carve_splits(root, "zrr", seed=1, n_val=5, exclude=[3, 17]) == a  # same seed, same carving
    assert Splits.load(record) == a
    assert carve_splits(root, "zrr", seed=2, n_val=5, exclude=[3, 17]).parts["val"] != a.parts["val"]
    with pytest.raises(UserError, match="split record"):
        carve_splits(root, "zrr", seed=2, n_val=5, exclude=exclude, record=record)
    ds = dataset(root, "zrr", "val", "efficient_isp", splits=record, with_reference=False)
    assert [s.id for s in ds.listing.samples] == list(a.parts["val"].ids)


def test_pairing_modes():
    assert PAIRINGS.names() == ["disjoint", "paired", "shuffled"]
    p = make_pairing("paired", 10, 10, True, 0, 0)
    assert p.raw.tolist() == p.target.tolist() == list(range(10))
    s0, s0b, s1 = (make_pairing("shuffled", 10, 10, True, 5, e) for e in (0, 0, 1))
    assert np.array_equal(s0.target, s0b.target) and not np.array_equal(s0.target, s1.target)
    assert sorted(s0.target.tolist()) == list(range(10))  # every photo used once per epoch
    assert not np.array_equal(make_pairing("shuffled", 10, 10, True, 6, 0).target, s0.target)
    d0, d1 = (make_pairing("disjoint", 11, 11, True, 5, e) for e in (0, 1))
    assert np.array_equal(d0.raw, d1.raw) and len(d0.raw) == 5  # the halves are fixed for the run
    assert set(d0.raw).isdisjoint(d0.target) and set(d1.raw).isdisjoint(d1.target)
    assert not np.array_equal(d0.target, d1.target)  # targets re-drawn each epoch
    with pytest.raises(UserError):
        make_pairing("paired", 4, 0, False, 0, 0)


def test_dataset_items_and_epoch_redraw(tmp_path):
    root = make_layout(tmp_path / "d", "mai2022", {"train": 12, "val": 2, "test": 2})
    kw = dict(cache_dir=tmp_path / "cache", demosaicer="bilinear")
    ds = dataset(root, "mai2022", "train", "efficient_isp", pairing="shuffled", **kw)
    item = ds[0]
    assert set(item) == {"input", "raw", "reference", "target", "index", "target_index"}  # unpaired: no own RGB
    with_own = dataset(root, "mai2022", "train", "efficient_isp", pairing="shuffled", paired_target=True, **kw)
    assert set(with_own[0]) == set(item) | {"paired_target"}
    assert item["input"].shape == (4, 8, 8) and item["raw"].shape == (1, 16, 16)
    assert all(item[k].dtype == torch.float32 for k in ("input", "raw", "reference", "target"))
    assert 0 <= item["reference"].min() and item["reference"].max() <= 1
    means = lambda: [round(float(ds[k]["target"].mean()), 3) for k in range(len(ds))]  # noqa: E731
    e0 = means()
    ds.set_epoch(1)
    e1 = means()
    ds.set_epoch(0)
    assert means() == e0 and e1 != e0
    paired = dataset(root, "mai2022", "train", "efficient_isp", **kw)
    assert torch.equal(paired[3]["target"], paired[3]["paired_target"])
    aug = dataset(root, "mai2022", "train", "efficient_isp", augment=True, patch_size=8, **kw)
    it = aug[2]
    assert it["raw"].shape == (1, 8, 8) and it["reference"].shape == (3, 8, 8) and it["target"].shape == (3, 8, 8)
    batch = next(iter(torch.utils.data.DataLoader(aug, batch_size=4)))
    assert batch["input"].shape == (4, 4, 4, 4)


def _colour_position_mosaic(h: int, w: int) -> np.ndarray:
    """value = colour * 100000 + y * 1000 + x, colour 0 = R, 1 = G, 2 = B on an RGGB grid."""
    y, x = np.mgrid[0:h, 0:w]
    colour = np.where((y % 2 == 0) & (x % 2 == 0), 0, np.where((y % 2 == 1) & (x % 2 == 1), 2, 1))
    return colour * 100000 + y * 1000 + x


@pytest.mark.parametrize("k, flip", DIHEDRAL)
def test_augmentation_keeps_cfa_phase(k, flip):
    raw = _colour_position_mosaic(8, 8)
    position = np.stack([raw % 100000] * 3, axis=-1)  # an "image" aligned with the mosaic
    out, (pos,) = augment_sample(raw, [position], k, flip)
    assert out.shape == (6, 6) and pos.shape == (6, 6, 3)
    colour = out // 100000
    assert np.all(colour[0::2, 0::2] == 0) and np.all(colour[1::2, 1::2] == 2)  # R plane is red, B is blue
    assert np.all(colour[0::2, 1::2] == 1) and np.all(colour[1::2, 0::2] == 1)
    assert np.array_equal(pos[..., 0], out % 100000)  # the aligned image moved with the mosaic


def test_augmentation_geometry():
    assert cfa_after(0, True) is CFA.GRBG and cfa_after(2, False) is CFA.BGGR and cfa_after(0, False) is CFA.RGGB
    raw = _colour_position_mosaic(6, 8)
    out, _ = augment_sample(raw, [], 0, False)
    assert np.array_equal(out, raw[:4, :6])
    out, _ = augment_sample(raw, [], 0, True)  # mirrored, then started one column in to land on red
    assert np.array_equal(out, raw[:4, ::-1][:, 1:7])


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_layout_and_determinism(tmp_path):
    """`data synth` twice with one seed: byte-identical trees (CLI and API alike); another seed: other bytes."""
    kw = {"n_train": 4, "n_val": 1, "n_test": 2, "size": 32}
    r = _cli("synth", tmp_path / "a", "--seed", 4, "--n-train", 4, "--n-val", 1, "--n-test", 2, "--size", 32)
    assert r.returncode == 0, r.stderr
    a = tmp_path / "a"
    b = synthesize(tmp_path / "b", "mai2022", seed=4, **kw)
    c = synthesize(tmp_path / "c", "mai2022", seed=5, **kw)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    files = set(_digest(a))
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        for i in range(n):
            assert {f"{split}/mediatek_raw/{i}.png", f"{split}/fujifilm/{i}.png"} <= files
    sources = [s["source"] for s in json.loads((a / SAMPLES).read_text())["samples"]["train"]]
    assert sources.count("dead_leaves") == 1  # the default quarter
    raw = cv2.imread(str(a / "train/mediatek_raw/0.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (32, 32) and raw.max() <= 1023
    assert 40 < np.median(raw) < 1023  # black level 64 plus signal
    z = synthesize(tmp_path / "z", "zrr", seed=0, n_train=2, n_val=0, n_test=1, size=16)
    assert (z / "train/huawei_raw/1.png").is_file() and (z / "test/canon/0.jpg").is_file()
    assert not (z / "val").exists()


def test_synth_split_statistics_agree(tmp_path):
    """The default set (the demo's): val's and test's mean brightness, R, G, B and share of dark pixels agree with
    train's. Tolerances: one sample's mean brightness varies with std ~0.10, so a 16-sample split mean has a
    standard error ~0.026 and its difference to train's ~0.03: 0.06 is two of those (channels and the dark share
    vary more: 0.08). The old set (hubble_deep_field and retina in train) was 0.18 apart, three times that."""
    r = _cli("synth", tmp_path / "d", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)["splits"]
    assert [stats[s]["n"] for s in ("train", "val", "test")] == [64, 16, 16]
    train = stats["train"]
    for split in ("val", "test"):
        s = stats[split]
        assert abs(s["mean"] - train["mean"]) < 0.06, (split, s, train)
        assert all(abs(s[c] - train[c]) < 0.08 for c in ("r", "g", "b", "dark")), (split, s, train)
    assert 0.3 < train["mean"] < 0.6 and train["dark"] < 0.15  # normally exposed, not a dark set
    assert stats == split_stats(tmp_path / "d")


def test_synth_sources_are_natural_photos_from_disjoint_splits(tmp_path):
    """Every sample's source is a photo of its own split or a dead-leaves scene; no astronomy, medical,
    microscopy, night or synthetic image anywhere; each photo is a colour, normally exposed, installed file."""
    root = synthesize(tmp_path / "s", "mai2022", n_train=12, n_val=4, n_test=4, size=32)
    samples = json.loads((root / SAMPLES).read_text())["samples"]
    for split, rows in samples.items():
        assert {s["source"] for s in rows} == set(PHOTO_SPLITS[split]) | {"dead_leaves"}
    used = [p for split in PHOTO_SPLITS.values() for p in split]
    assert len(used) == len(set(used)) and set(used) == set(PHOTOS)  # disjoint, every photo used
    assert not set(used) & set(NOT_PHOTOGRAPHIC)
    for name in used:
        img = load_photo(name)
        grey = img.mean(-1)
        assert np.abs(img - grey[..., None]).mean() > 0.03, name  # colour, not grayscale
        assert 0.3 < grey.mean() < 0.6 and (grey < 0.1).mean() < 0.4, name  # normally exposed
        if PHOTOS[name].package != "scikit-image":
            assert photo_file(PHOTOS[name]).is_file()


def test_synth_zrr_size_448(tmp_path):
    """ZRR-sized samples: photos smaller than 448 px (chelsea, the Kodak images) are upscaled to fit."""
    root = synthesize(tmp_path / "z", "zrr", n_train=2, n_val=1, n_test=2, size=448, dead_leaves=0.5)
    samples = json.loads((root / SAMPLES).read_text())["samples"]
    assert [s["source"] for s in samples["train"]] == ["dead_leaves", "coffee"]
    assert [s["source"] for s in samples["test"]] == ["dead_leaves", "chelsea"]
    assert samples["test"][1]["scale"] == pytest.approx(448 / 300, abs=1e-4)  # the least upscale that fits
    for split in ("train", "val", "test"):
        raw = cv2.imread(str(root / split / "huawei_raw/0.png"), cv2.IMREAD_UNCHANGED)
        rgb = cv2.imread(str(root / split / "canon/0.jpg"))
        assert raw.shape == (448, 448) and rgb.shape == (448, 448, 3)


def test_dead_leaves_model():
    """Deterministic per seed; radii follow p(r) ∝ r^-3; the image is covered by palette colours only."""
    palette = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    a = dead_leaves(64, palette, np.random.default_rng(3))
    assert np.array_equal(a, dead_leaves(64, palette, np.random.default_rng(3)))
    assert not np.array_equal(a, dead_leaves(64, palette, np.random.default_rng(4)))
    assert a.shape == (64, 64, 3) and 0.3 < a.mean() < 0.7
    pure = np.isclose(a, 0) | np.isclose(a, 1)  # off the anti-aliased edges every pixel is one leaf's colour
    assert pure.mean() > 0.5
    r = leaf_radii(200_000, 1.0, 32.0, np.random.default_rng(0))
    assert 1.0 <= r.min() and r.max() <= 32.0
    # P(r > 2) = (2^-2 - 32^-2) / (1 - 32^-2) for density r^-3: a quarter; P(r > 4) a sixteenth.
    assert abs((r > 2).mean() - 0.2493) < 0.005 and abs((r > 4).mean() - 0.0616) < 0.003
    colours = dead_leaves(64, np.array([[0.8, 0.2, 0.1]]), np.random.default_rng(0))
    assert np.allclose(colours, np.rint(np.array([0.8, 0.2, 0.1]) * 255) / 255)


def _ensure(root):
    return str(ensure_synthetic(root, "zrr", n_train=4, n_val=1, n_test=1, size=16))


def test_ensure_synthetic_concurrent(tmp_path):
    root = tmp_path / "syn"
    with mp.get_context("spawn").Pool(2) as pool:
        assert pool.map(_ensure, [str(root)] * 2) == [str(root)] * 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["syn"]
    assert len(list((root / "train/huawei_raw").iterdir())) == 4
    with pytest.raises(UserError, match="built with"):
        ensure_synthetic(root, "zrr", n_train=5)
    marker = json.loads((root / MARKER).read_text())
    (root / MARKER).write_text(json.dumps({k: v for k, v in marker.items() if k not in ("generator", "dead_leaves")}))
    (root / "train/huawei_raw/9.png").write_bytes(b"left by the old generator")
    assert _ensure(root) == str(root)  # a set from the old generator (no version in its marker): rebuilt
    assert json.loads((root / MARKER).read_text()) == marker and not (root / "train/huawei_raw/9.png").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "isp_search.cli", "data", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.slow  # `isp-search data check` in fresh processes (~12 s on 2 cores)
def test_data_check_cli(tmp_path):
    root = tmp_path / "set"
    r = _cli("synth", root, "--format", "mai2022", "--n-train", 4, "--n-val", 1, "--n-test", 1, "--size", 16)
    assert r.returncode == 0, r.stderr
    assert "RGB statistics per split" in r.stdout and r.stdout.splitlines()[-1].startswith("test ")
    r = _cli("check", root, "--format", "mai2022", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["splits"]["train"]["raw"] == 4 and report["splits"]["train"]["pairing"] == "paired"
    assert report["splits"]["val"]["raw_sizes"] == ["16x16"] and report["splits"]["test"]["raw_max"] <= 1023

    bad = root / "train/mediatek_raw/1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    r = _cli("check", root, "--format", "mai2022")
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr

    cv2.imwrite(str(bad), np.zeros((16, 16), np.uint8))  # an 8-bit RAW
    r = _cli("check", root, "--format", "mai2022")
    assert r.returncode == 2 and str(bad) in r.stderr and "8-bit" in r.stderr

    write_raw(bad, np.zeros((16, 16), np.uint16))
    (root / "test/fujifilm/0.png").unlink()
    r = _cli("check", root, "--format", "mai2022")
    assert r.returncode == 2 and str(root / "test/mediatek_raw/0.png") in r.stderr and "counterpart" in r.stderr


def _write_dng(path: Path, mosaic: np.ndarray, cfa: bytes, black: int, white: int) -> None:
    """A minimal uncompressed DNG (tifffile) that LibRaw reads; LibRaw wants both sides >= 22."""
    import tifffile

    identity = [v for x in (1, 0, 0, 0, 1, 0, 0, 0, 1) for v in (x * 10000, 10000)]
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (271, "s", 0, "Test", True),
        (272, "s", 0, "Cam", True),
        (50708, "s", 0, "Test Cam", True),
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(cfa), True),  # CFAPattern, 0 = R, 1 = G, 2 = B
        (50714, "H", 1, black, True),
        (50717, "H", 1, white, True),
        (50721, "2i", 9, identity, True),  # ColorMatrix1
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, extratags=tags, subfiletype=0)


def test_dng_is_read_as_rggb_10_bit(tmp_path):
    from isp_search.data.io import read_raw

    m = np.full((32, 48), 1000, np.uint16)  # a GRBG sensor, 12-bit, black 256
    m[0::2, 1::2] = 3000  # red
    m[1::2, 0::2] = 500  # blue
    _write_dng(tmp_path / "a.dng", m, bytes([1, 0, 2, 1]), 256, 4095)
    raw = read_raw(tmp_path / "a.dng")
    assert raw.dtype == np.uint16 and raw.shape[0] % 2 == 0 and raw.shape[1] % 2 == 0
    level = lambda v: round(64 + (v - 256) / (4095 - 256) * (1023 - 64))  # noqa: E731
    assert np.all(raw[0::2, 0::2] == level(3000)) and np.all(raw[1::2, 1::2] == level(500))  # now RGGB
    assert np.all(raw[0::2, 1::2] == level(1000)) and np.all(raw[1::2, 0::2] == level(1000))
