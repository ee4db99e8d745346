"""bench-train --sizes: one row per size with ours, ours with the real-feature cache and the textbook DLA, and a
one-line error for a size the ViT cannot take."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from isp_search.cli import main

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VARIANTS = ("ours", "cache", "naive")


@pytest.mark.slow
def test_sizes_one_row_per_size_and_the_cache_saves_flops(capsys):
    code = main(["bench-train", str(CONFIGS / "smoke_unpaired.yaml"), "--sizes", "32,48", "--steps", "1",
                 "--batch-size", "2", "--set", "backbone_weights=random", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["size"] for r in rows] == [32, 48]
    for r in rows:
        assert r["batch_size"] == 2 and r["vit_img_size"] == 32  # the smoke config's ViT size caps it
        for v in VARIANTS:
            assert math.isfinite(r[f"{v}_ms"]) and r[f"{v}_ms"] > 0 and math.isfinite(r[f"{v}_gflop"]), (v, r)
        assert r["cache_gflop"] < r["ours_gflop"] < r["naive_gflop"]  # the cache skips the real-branch forwards
        assert r["cache_flops_ratio"] == pytest.approx(r["cache_gflop"] / r["ours_gflop"])
    assert rows[1]["ours_gflop"] > rows[0]["ours_gflop"]  # each row runs at its own size


@pytest.mark.parametrize("bad", ["64,abc", "64,40", "0"])
def test_sizes_bad_value_is_one_line(bad, capsys):
    code = main(["bench-train", str(CONFIGS / "smoke_unpaired.yaml"), "--sizes", bad])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--sizes" in err and "multiples of 16" in err and repr(bad.split(",")[-1]) in err
