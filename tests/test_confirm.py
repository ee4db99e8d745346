"""The confirmation stage's arithmetic and words: each configuration's mean ± sd over its seeds (the search's own
run first), and whether the best beats the default by more than twice the standard error of the difference.
The stage itself (Ray tasks, kill and --resume) runs in tests/test_pipeline.py."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest

from isp_search.search.baselines import Baseline
from isp_search.search.confirm import Confirmed, beats_by, combine
from isp_search.search.pareto import ParetoEntry, PostSummary
from isp_search.search.reconcile import FINAL_ATTR
from isp_search.search.space_file import load_space
from isp_search.search.summary import confirmation_lines

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml"


def _trial(**final) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(values=[final["lpips"], final["psnr"]], user_attrs={FINAL_ATTR: final})


def test_combine_takes_the_trials_own_run_as_the_first_seed():
    t = _trial(lpips=0.03, psnr=19.0, ssim=0.8, **{"test/lpips": 0.02, "test/psnr": 18.0}, run_dir="/exp/trial/run")
    seeds = [(1, Path("/c/t-seed1"), {"status": "completed", "val": {"lpips": 0.05, "psnr": 18.0, "ssim": 0.7},
                                      "test": {"lpips": 0.04, "psnr": 17.0}}),
             (2, Path("/c/t-seed2"), {"status": "diverged", "reason": "loss is nan at step 7"})]
    c = combine(t, "t", seeds)
    assert c.n == 2 and c.runs == ["/exp/trial/run", "/c/t-seed1"] and c.failed == ["seed 2: loss is nan at step 7"]
    assert c.mean["val/psnr"] == pytest.approx(18.5) and c.sd["val/psnr"] == pytest.approx(statistics.stdev([19, 18]))
    assert c.mean["test/lpips"] == pytest.approx(0.03) and c.mean["val/ssim"] == pytest.approx(0.75)
    assert c.se("val/psnr") == pytest.approx(statistics.stdev([19, 18]) / math.sqrt(2))


def test_beats_by_needs_more_than_two_standard_errors_in_the_better_direction():
    best = Confirmed("b", 4, 3, mean={"val/psnr": 19.0, "val/lpips": 0.030}, sd={"val/psnr": 0.3, "val/lpips": 0.01})
    default = Confirmed("d", 0, 3, mean={"val/psnr": 17.0, "val/lpips": 0.035},
                        sd={"val/psnr": 0.5, "val/lpips": 0.01})
    diff, se, beyond = beats_by(best, default, "val/psnr", "max")
    assert diff == pytest.approx(2.0) and se == pytest.approx(math.sqrt((0.3**2 + 0.5**2) / 3)) and beyond
    noisy = Confirmed("d", 0, 3, mean=default.mean, sd={"val/psnr": 2.0})  # the same lead, a noisier default
    assert not beats_by(best, noisy, "val/psnr", "max")[2]
    diff, se, beyond = beats_by(best, default, "val/lpips", "min")
    assert diff == pytest.approx(-0.005) and not beyond  # better on average, within 2 standard errors
    assert not beats_by(default, best, "val/psnr", "max")[2]  # worse is never "beyond"
    assert beats_by(best, default, "test/psnr", "max") is None


def test_summary_prints_mean_sd_and_the_seed_noise_verdict():
    space = load_space(DEMO)
    best = Confirmed("b", 4, 3, mean={"val/psnr": 19.0, "val/lpips": 0.030, "test/psnr": 18.0, "test/lpips": 0.02},
                     sd={"val/psnr": 0.3, "val/lpips": 0.01, "test/psnr": 0.2, "test/lpips": 0.01})
    default = Confirmed("d", 0, 3, mean={"val/psnr": 17.0, "val/lpips": 0.035}, sd={"val/psnr": 0.1, "val/lpips": 0.01})
    entry = ParetoEntry(4, "b", {"lpips": 0.03, "psnr": 19.0}, {}, confirmed=best)
    summary = PostSummary(None, [entry], baselines=[Baseline("default", "trial #0 d", trial_id="d", confirmed=default)])
    lines = confirmation_lines(summary, space)
    assert lines[0].startswith("confirmed over seeds (mean ± sd of n training runs")
    assert lines[2].split()[:8] == ["4", "b", "searched", "3", "0.03", "±", "0.01", "19"]
    assert lines[3].split()[:4] == ["0", "d", "default", "3"] and lines[3].rstrip().endswith("–")
    assert lines[-2] == ("  val/lpips: better on average, but within seed noise: #4 0.03 vs default 0.035, "
                         "difference -0.005 ± 0.0082 (n=3, 3)")
    assert lines[-1].startswith("  val/psnr: yes, beyond seed noise: #4 19 vs default 17, difference +2 ± 0.18")
    alone = confirmation_lines(PostSummary(None, [entry]), space)
    assert alone[-1] == "best against the default beyond seed noise: not measured (no confirmed default point)"
    assert confirmation_lines(PostSummary(None, [ParetoEntry(1, "x", {}, {})]), space) == []
