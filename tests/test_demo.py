"""The study's baselines tell the truth: the start is measured as a trial measures itself, the default point is
found among the trials, and the closing verdict names each objective against each baseline."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from isp_search.search.baselines import Baseline, beats, default_baseline, measure
from isp_search.search.context import base_train_config
from isp_search.search.pareto import ParetoEntry, PostSummary
from isp_search.search.reconcile import FINAL_ATTR, RAY_TRIAL_ATTR
from isp_search.search.space_file import load_space
from isp_search.search.summary import baseline_lines, verdict
from isp_search.train import apply_overrides, load_train_config, train

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "search_spaces" / "demo.yaml"


def _entry(number: int, lpips: float, psnr: float, test: dict | None = None) -> ParetoEntry:
    return ParetoEntry(number, f"t{number}", {"lpips": lpips, "psnr": psnr}, {}, test=test or {})


def _baselines() -> list[Baseline]:
    return [Baseline("start", "/runs/pre", val={"lpips": 0.30, "psnr": 17.0}, test={"lpips": 0.28, "psnr": 16.0}),
            Baseline("default", "trial #0 d0", val={"lpips": 0.29, "psnr": 17.2}, test={"lpips": 0.27, "psnr": 16.1})]


def test_verdict_names_each_objective_against_each_baseline():
    space = load_space(DEMO)
    # Trial 0 has the best LPIPS (0.25, better than both), trial 1 the best PSNR (17.1: beats the start only).
    summary = PostSummary(None, [_entry(0, 0.25, 15.0), _entry(1, 0.28, 17.1)], baselines=_baselines())
    assert verdict(summary, space) == ("val lpips (best #0): start yes (0.25 vs 0.3), default yes (0.25 vs 0.29); "
                                       "val psnr (best #1): start yes (17.1 vs 17), default no (17.1 vs 17.2)")
    same = PostSummary(None, [_entry(3, 0.30 + 1e-9, 17.0)], baselines=_baselines()[:1])
    assert verdict(same, space).startswith("val lpips (best #3): start no (0.3 vs 0.3)")  # float noise is no win
    assert verdict(PostSummary(None, [], baselines=_baselines()), space) == \
        "lpips: no COMPLETE trial; psnr: no COMPLETE trial"
    assert beats({"psnr": 18.0}, {}, "psnr") is None


def test_summary_shows_baselines_and_each_trials_difference_on_val_and_test():
    space = load_space(DEMO)
    summary = PostSummary(None, [_entry(4, 0.25, 18.0, {"lpips": 0.20, "psnr": 17.5})], baselines=_baselines())
    lines = baseline_lines(summary, space)
    assert lines[0].startswith("baselines (measured on the trials' val and test subsets")
    head, start, default = lines[1].split(), lines[2].split(), lines[3].split()
    assert head[:2] == ["baseline", "source"] and start[:6] == ["start", "pre", "0.3", "17", "0.28", "16"]
    assert default[:7] == ["default", "trial", "#0", "d0", "0.29", "17.2", "0.27"]
    rows = {ln.split()[2]: ln.split()[3:] for ln in lines[6:8]}  # "#  trial  vs  val lpips  val psnr  test ..."
    assert rows["start"] == ["-0.05", "+1", "-0.08", "+1.5"]
    assert rows["default"] == ["-0.04", "+0.8", "-0.07", "+1.4"]
    assert lines[-3:] == ["did the search beat its baselines?",
                          "  val lpips (best #4): start yes (0.25 vs 0.3), default yes (0.25 vs 0.29)",
                          "  val psnr (best #4): start yes (18 vs 17), default yes (18 vs 17.2)"]
    assert all(len(ln) <= 120 for ln in lines), max(lines, key=len)


def test_default_baseline_is_the_trial_of_the_first_point():
    space = load_space(DEMO)
    point = dict(space.search.points_to_evaluate[0])
    study = optuna.create_study(directions=["minimize", "maximize"])
    dists = {"optim.d_color_lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
             "optim.d_color_every": optuna.distributions.IntDistribution(1, 10, log=True),
             "optim.g_lr": optuna.distributions.FloatDistribution(3e-5, 3e-4, log=True)}
    for values, params, rid in (([0.2, 18.0], {**point, "optim.d_color_lr": 5e-4}, "other"),
                                ([0.3, 17.0], point, "dflt")):
        study.add_trial(optuna.trial.create_trial(
            values=values, params=params, distributions=dists,
            user_attrs={RAY_TRIAL_ATTR: rid, FINAL_ATTR: {"best_step": 0, "test/psnr": 16.5, "ssim": 0.7}}))
    b = default_baseline(study, space)
    assert (b.trial_id, b.val["lpips"], b.val["psnr"], b.test) == ("dflt", 0.3, 17.0, {"psnr": 16.5})
    assert b.val["ssim"] == 0.7 and "never beat its start" in b.note
    assert default_baseline(study, replace(space, search=replace(space.search, points_to_evaluate=()))) is None


@pytest.mark.slow
def test_start_baseline_equals_a_trial_that_does_not_move(synth_root, tmp_path):
    """The start's numbers are what a trial from it reports when its generator barely moves (g_lr 1e-12): same
    val and test images, crop size and (seeded random) metric networks, so the comparison is like for like."""
    over = {"data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 2, "train.batch_size": 2,
            "train.progress": False, "train.steps": 2, "train.eval_interval": 2}
    pre = train(apply_overrides(load_train_config(ROOT / "configs" / "synth_pretrain.yaml"), over), tmp_path / "pre")
    space = load_space(ROOT / "search_spaces" / "smoke.yaml")
    space = replace(space, base=replace(space.base, overrides={**space.base.overrides, "data.root": str(synth_root),
                                                               "data.synthetic": False,
                                                               "model.init_from": pre["run_dir"]}))
    cfg = base_train_config(space)
    start = measure(cfg)
    assert start["val"]["n_images"] == 4 and start["test"]["n_images"] == 4  # smoke_unpaired: data.eval_limit 4
    # The loss terms do not change what is measured; only TV keeps the frozen VGG/ViT/AlexNet branches unbuilt.
    cheap = {f"losses.{t}": 0.0 for t in ("content", "adv_color", "adv_relu1", "adv_relu4")} | {"losses.tv": 1.0}
    still = train(apply_overrides(cfg, {**cheap, "optim.g_lr": 1e-12, "train.steps": 1, "train.eval_interval": 1}),
                  tmp_path / "trial")
    for split in ("val", "test"):
        for k in ("psnr", "ssim", "lpips"):
            assert start[split][k] == pytest.approx(still[split][k], abs=1e-4), (split, k)
