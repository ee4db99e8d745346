"""Early stopping never stops the default point (the study's default baseline), and still ranks the others
against its results."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from isp_search.search.keep_default import DefaultKeepingASHA, DefaultKeepingMOASHA, is_point
from isp_search.search.moasha import MOASHAScheduler

DEFAULT = {"optim.d_color_lr": 1e-5, "optim.d_color_every": 10}


@dataclass
class FakeTrial:
    """What a scheduler reads of a Ray trial: its id and sampled config."""

    trial_id: str
    config: dict = field(default_factory=dict)
    status: str = "RUNNING"


def _rung_decisions(scheduler: TrialScheduler, order: list[tuple[FakeTrial, dict]]) -> dict[str, str]:
    for trial, _ in order:
        scheduler.on_trial_add(None, trial)
    return {trial.trial_id: scheduler.on_trial_result(None, trial, {"training_iteration": 2, **res})
            for trial, res in order}


def _asha(cls):
    return cls(time_attr="training_iteration", metric="score", mode="max", max_t=10, grace_period=2,
               reduction_factor=2)


def _moasha(cls):
    return cls(["lpips", "psnr"], ["min", "max"], time_attr="training_iteration", max_t=10, grace_period=2,
               reduction_factor=2)


@pytest.mark.parametrize("make, plain, keeping", [(_asha, ASHAScheduler, DefaultKeepingASHA),
                                                  (_moasha, MOASHAScheduler, DefaultKeepingMOASHA)])
def test_the_default_point_runs_on_where_the_plain_scheduler_stops_it(make, plain, keeping):
    good, bad = {"score": 18.0, "lpips": 0.03, "psnr": 19.0}, {"score": 10.0, "lpips": 0.3, "psnr": 12.0}
    order = [(FakeTrial("a", {"optim.d_color_lr": 5e-4, "optim.d_color_every": 1}), good),
             (FakeTrial("b", {"optim.d_color_lr": 3e-4, "optim.d_color_every": 1}), good),
             (FakeTrial("d", dict(DEFAULT)), bad),  # the default point, worst at its first rung
             (FakeTrial("c", {"optim.d_color_lr": 2e-5, "optim.d_color_every": 8}), bad)]  # as bad, not the default
    stopped = _rung_decisions(make(plain), order)
    assert stopped["d"] == stopped["c"] == TrialScheduler.STOP  # the plain scheduler stops both
    kept = make(keeping)
    kept.keep = dict(DEFAULT)
    decisions = _rung_decisions(kept, order)
    assert decisions["d"] == TrialScheduler.CONTINUE and decisions["c"] == TrialScheduler.STOP
    assert decisions["a"] == decisions["b"] == TrialScheduler.CONTINUE


def test_is_point_compares_floats_to_rounding_and_nothing_else_loosely():
    assert is_point({"optim.d_color_lr": 1e-5 * (1 + 1e-12), "optim.d_color_every": 10, "x": 1}, DEFAULT)
    assert not is_point({"optim.d_color_lr": 1.1e-5, "optim.d_color_every": 10}, DEFAULT)
    assert not is_point({"optim.d_color_lr": 1e-5, "optim.d_color_every": 9}, DEFAULT)
    assert not is_point({"optim.d_color_lr": 1e-5}, DEFAULT)  # a missing key is not the point
    assert not is_point(DEFAULT, None) and not is_point(DEFAULT, {})
    assert not is_point({"optim.d_color_lr": True, "optim.d_color_every": 10}, {"optim.d_color_lr": 1.0,
                                                                               "optim.d_color_every": 10})
