"""``isp-search demo`` tells the truth about itself: the pretrain start's metrics, measured as a trial measures its
own, beside the best trial's, and a one-line verdict per objective."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from isp_search.commands.demo import SMOKE_SPACE, compare_with_start, pretrain, start_metrics
from isp_search.search.pareto import ParetoEntry, PostSummary
from isp_search.search.context import base_train_config
from isp_search.search.space_file import load_space
from isp_search.train import apply_overrides, train


def _entry(number: int, lpips: float, psnr: float) -> ParetoEntry:
    return ParetoEntry(number, f"t{number}", {"lpips": lpips, "psnr": psnr}, {})


def test_verdict_names_each_objective_against_the_start():
    space = load_space(SMOKE_SPACE)
    start = {"psnr": 17.0, "ssim": 0.6, "lpips": 0.30, "n_images": 4, "weights": "random"}
    # Trial 1 has the best PSNR (16.5, below the start), trial 0 the best LPIPS (0.25, better than the start).
    summary = PostSummary(study=None, pareto=[_entry(0, 0.25, 15.0), _entry(1, 0.28, 16.5)])
    text = compare_with_start(start, summary, space, "runs/pre")
    lines = text.splitlines()
    assert lines[0].startswith("pretrain start runs/pre: val lpips 0.3, psnr 17") and "4 images" in lines[0]
    assert lines[1] == "best trial per objective: lpips 0.25 (#0), psnr 16.5 (#1)"
    assert lines[2] == "did the best trial beat the pretrain start? LPIPS yes (0.25 vs 0.3); PSNR no (16.5 vs 17)"
    better = compare_with_start(start, PostSummary(None, [_entry(2, 0.35, 17.5)]), space, "x").splitlines()[2]
    assert better.endswith("LPIPS no (0.35 vs 0.3); PSNR yes (17.5 vs 17)")
    same = compare_with_start(start, PostSummary(None, [_entry(3, 0.30 + 1e-9, 17.0)]), space, "x").splitlines()[2]
    assert same.endswith("LPIPS no (the best is the start itself, 0.3); PSNR no (the best is the start itself, 17)")
    none = compare_with_start(start, PostSummary(None, []), space, "x").splitlines()
    assert none[1].endswith("none (no COMPLETE trial)") and "LPIPS: not measured" in none[2]


@pytest.mark.slow
def test_start_metrics_equal_a_trial_that_does_not_move(synth_root, tmp_path):
    """The start's numbers are what a trial from it reports when its generator barely moves (g_lr 1e-12): same
    val images, crop size and (seeded random) metric networks, so the comparison is like for like."""
    over = {"data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 2, "train.batch_size": 2,
            "train.progress": False}
    init = pretrain(tmp_path, 2, over)
    space = load_space(SMOKE_SPACE)
    space = replace(space, base=replace(space.base, overrides={**space.base.overrides, "data.root": str(synth_root),
                                                               "data.synthetic": False, "model.init_from": init}))
    start = start_metrics(space)
    assert start["n_images"] == 4 and start["weights"] == "random"  # smoke_unpaired: data.eval_limit 4
    # The loss terms do not change what is measured; only TV keeps the frozen VGG/ViT/AlexNet branches unbuilt.
    cheap = {f"losses.{t}": 0.0 for t in ("content", "adv_color", "adv_relu1", "adv_relu4")} | {"losses.tv": 1.0}
    still = train(apply_overrides(base_train_config(space), {**cheap, "optim.g_lr": 1e-12, "train.steps": 1,
                                                             "train.eval_interval": 1}), tmp_path / "trial")
    for k in ("psnr", "ssim", "lpips"):
        assert start[k] == pytest.approx(still["val"][k], abs=1e-4), k
    assert Path(init).name.startswith("demo-pretrain-")
