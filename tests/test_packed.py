"""Packed decoded images: the same bits as decoding the files; unpaired items decode only their target; bench-data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from datasets import dataset

import isp_search.data.dataset as dataset_mod
from isp_search.data.io import write_raw, write_rgb
from isp_search.data.packed import PREFIX

REPO = Path(__file__).resolve().parents[1]


def _mai(root: Path, n_train: int = 6, size: int = 24) -> Path:
    """MAI 2022 layout with random RAW and photos (one of them 16-bit) of noise, so every pixel matters."""
    for split, n in (("train", n_train), ("val", 2), ("test", 2)):
        for i in range(n):
            rng = np.random.default_rng([i, len(split)])
            write_raw(root / split / "mediatek_raw" / f"{i}.png", rng.integers(0, 1024, (size, size)).astype(np.uint16))
            rgb = rng.random((size, size, 3))
            if i == 1:  # a 16-bit PNG: stored as uint16 in the pack
                path = root / split / "fujifilm" / f"{i}.png"
                cv2.imwrite(str(path), np.rint(rgb * 65535).astype(np.uint16))
            else:
                write_rgb(root / split / "fujifilm" / f"{i}.png", rgb)
    return root


def _folder(root: Path) -> Path:
    """``folder`` layout: unpaired train photos of other sizes (larger: cropped; smaller: resized)."""
    for i in range(4):
        rng = np.random.default_rng(i)
        write_raw(root / "train" / "raw" / f"r{i}.png", rng.integers(0, 1024, (16, 16)).astype(np.uint16))
        side = (30, 10, 16, 12)[i]
        write_rgb(root / "train" / "rgb" / f"p{i}.jpg", rng.random((side, side + 2, 3)))
    return root


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:  # byte-exact: same dtype, shape and bits
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


@pytest.mark.parametrize("fmt, kw", [
    ("mai2022", dict(pairing="shuffled")),
    ("mai2022", dict(pairing="paired", paired_target=True)),
    ("mai2022", dict(pairing="disjoint", augment=True, patch_size=12)),
    ("folder", dict(pairing="shuffled", with_reference=False)),
])
def test_packed_items_equal_decoded_files(tmp_path, fmt, kw):
    root = _mai(tmp_path / "d") if fmt == "mai2022" else _folder(tmp_path / "d")
    common = dict(cache_dir=tmp_path / "cache", demosaicer="bilinear", cache_images=False, n_val=2, n_test=2,
                  seed=3, **kw)
    files = dataset(root, fmt, "train", "efficient_isp", packed=False, **common)
    assert files.packed is None and not list((tmp_path / "cache").glob(f"{PREFIX}*"))  # false: no pack built
    assert dataset(root, fmt, "train", "efficient_isp", **common).packed is None  # auto: none there yet
    packed = dataset(root, fmt, "train", "efficient_isp", packed=True, **common)
    assert packed.packed is not None and packed.packed.nbytes > 0
    for epoch in (0, 1):
        files.set_epoch(epoch)
        packed.set_epoch(epoch)
        for k in range(len(files)):
            _same(files[k], packed[k])
    # A copy of the data set elsewhere opens the same pack (content key) and reads the same items.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    again = dataset(copy, fmt, "train", "efficient_isp", **common)
    assert again.packed is not None and again.packed.folder == packed.packed.folder
    packed.set_epoch(0)
    _same(again[1], packed[1])
    # Workers re-open the maps (the pack pickles as its folder).
    batch = next(iter(torch.utils.data.DataLoader(packed, batch_size=2, num_workers=1)))
    _same({k: v[0] for k, v in batch.items()}, packed[0])


def test_unpaired_item_decodes_only_its_target(tmp_path, monkeypatch):
    root = _mai(tmp_path / "d")
    calls: list[str] = []
    real = dataset_mod.decode_rgb

    def spy(path):  # the real decoder, counted
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(dataset_mod, "decode_rgb", spy)
    kw = dict(cache_dir=tmp_path / "cache", demosaicer="bilinear", cache_images=False, packed=False)

    def decodes(**more) -> list[int]:
        ds = dataset(root, "mai2022", "train", "efficient_isp", **kw, **more)
        out = []
        for k in range(len(ds)):
            calls.clear()
            ds[k]
            out.append(len(calls))
        return out

    shuffled = dataset(root, "mai2022", "train", "efficient_isp", pairing="shuffled", **kw)
    calls.clear()
    item = shuffled[2]
    assert "paired_target" not in item and len(calls) == 1  # the drawn target only
    assert calls[0] == shuffled.listing.rgb_pool[int(shuffled.pairing.target[2])].name
    assert decodes(pairing="shuffled") == [1] * len(shuffled)
    assert decodes(pairing="paired") == [1] * len(shuffled)  # own RGB, decoded once for target + paired_target
    assert decodes(pairing="shuffled", paired_target=True) == [2] * len(shuffled)


@pytest.mark.slow  # `isp-search bench-data` in a fresh process (~9 s)
def test_bench_data_cli_smoke(tmp_path):
    """Smoke test: bench-data --pack on a tiny set reports every source and the loader (no step)."""
    root = _mai(tmp_path / "d", n_train=8, size=16)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mode: unpaired\nbackbone_weights: random\ndata: {{root: {root}, format: mai2022, n_val: 2, "
                   f"n_test: 2, demosaicer: bilinear}}\ntrain: {{batch_size: 2, device: cpu}}\n")
    env = {**os.environ, "ISP_SEARCH_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "bench-data", str(cfg), "--pack", "--no-step",
                        "--seconds", "0.2", "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["source"] == "packed" and Path(res["pack"]).is_dir()
    assert set(res["one_process"]) == {"files", "packed", "memory"}
    assert all(v["items_per_s"] > 0 for v in res["one_process"].values()) and res["loader"]["items_per_s"] > 0
    assert "packed 8 RAW + 8 RGB" in r.stderr  # the build said what it did
