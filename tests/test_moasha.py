"""MOASHA: promotion by Pareto rank and crowding at each rung, missing values as the worst, state that survives
pickling, the default for two objectives, a real Tuner run, and the bench-scheduler comparison."""

from __future__ import annotations

import math
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from isp_search.cli import main
from isp_search.configio import ConfigError
from isp_search.diagnostics.scheduler_sim import curve_trainable
from isp_search.errors import UserError
from isp_search.search.moasha import MOASHAScheduler, crowding_distances, nondominated_fronts, to_minimised
from isp_search.search.preflight import scheduler_problems
from isp_search.search.space import Objective, SchedulerCfg, SearchSpace
from isp_search.search.space_file import load_space

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
TWO = (Objective("lpips", "min"), Objective("psnr", "max"))


class Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def moasha(rf: float = 2.0, metrics: tuple[str, ...] = ("lpips", "psnr"), modes: tuple[str, ...] = ("min", "max")
           ) -> MOASHAScheduler:
    return MOASHAScheduler(list(metrics), list(modes), max_t=10, grace_period=1, reduction_factor=rf)


def report(s: TrialScheduler, trial_id: str, t: int = 1, **values: object) -> str:
    return s.on_trial_result(None, Trial(trial_id), {"training_iteration": t, **values})


# At rung 1 with reduction factor 2: X is best on PSNR, P best on LPIPS (worst scalar psnr - 10*lpips), D is
# dominated by X but has the second-best scalar.
X, P, D = {"lpips": 0.30, "psnr": 34.0}, {"lpips": 0.05, "psnr": 25.0}, {"lpips": 0.31, "psnr": 33.0}


def score(v: dict) -> float:
    return v["psnr"] - 10 * v["lpips"]


def test_dominated_trial_stops_while_a_pareto_optimal_one_with_a_worse_score_continues():
    assert score(P) < score(D) < score(X)
    s = moasha()
    assert [report(s, "x", **X), report(s, "p", **P), report(s, "d", **D)] == [CONTINUE, CONTINUE, STOP]
    # ASHA on the scalar, same reports: the opposite for the two that matter
    asha = ASHAScheduler(metric="score", mode="max", max_t=10, grace_period=1, reduction_factor=2)
    for trial_id in "xpd":
        asha.on_trial_add(None, Trial(trial_id))
    decisions = [asha.on_trial_result(None, Trial(i), {"training_iteration": 1, "score": score(v)})
                 for i, v in (("x", X), ("p", P), ("d", D))]
    assert decisions == [CONTINUE, STOP, CONTINUE]


def test_a_trial_dominated_on_the_second_objective_alone_stops():
    s = moasha()
    assert report(s, "a", lpips=0.2, psnr=30.0) == CONTINUE
    assert report(s, "b", lpips=0.2, psnr=29.0) == STOP  # equal LPIPS, worse PSNR: dominated
    assert report(s, "c", lpips=0.1, psnr=20.0) == CONTINUE  # best LPIPS: on the front (2 of 3 kept)


def test_crowding_decides_within_the_last_front_that_fits():
    """Five non-dominated trials, four kept (reduction factor 1.25): a fifth arriving between two close neighbours
    stops, one arriving where the front is empty continues (and the closest of the others is now the most
    crowded)."""
    spread = [("a", 0.0, 10.0), ("e", 10.0, 0.0), ("c1", 5.0, 3.1), ("c2", 5.1, 3.0)]
    for last, expected in ((("n", 5.05, 3.05), STOP), (("m", 2.0, 6.0), CONTINUE)):
        s = moasha(rf=1.25, metrics=("f1", "f2"), modes=("min", "min"))
        assert [report(s, i, f1=a, f2=b) for i, a, b in spread] == [CONTINUE] * 4
        i, a, b = last
        assert report(s, i, f1=a, f2=b) == expected, last
    points = [(0.0, 10.0), (2.0, 6.0), (5.0, 3.1), (5.1, 3.0), (10.0, 0.0)]
    d = crowding_distances(points)
    assert d[0] == d[4] == math.inf and min(d) == d[2]


def test_rungs_and_max_t_as_asha():
    s = moasha(rf=3.0)
    assert [m for m, _ in s.rungs] == [9.0, 3.0, 1.0]  # max_t 10, grace 1
    assert report(s, "a", t=2, lpips=0.1, psnr=30.0) == CONTINUE and list(dict(s.rungs)[1.0]) == ["a"]
    assert dict(s.rungs)[3.0] == {}  # recorded at the highest rung reached only
    assert report(s, "a", t=3, lpips=0.1, psnr=30.0) == CONTINUE and "a" in dict(s.rungs)[3.0]
    assert report(s, "a", t=10, lpips=0.1, psnr=30.0) == STOP  # the closing report at max_t


def test_missing_or_nan_values_count_as_the_worst():
    assert to_minimised({"lpips": float("nan"), "psnr": 30.0}, ["lpips", "psnr"], ["min", "max"]) == (math.inf, -30.0)
    assert to_minimised({"psnr": math.inf}, ["lpips", "psnr"], ["min", "max"]) == (math.inf, math.inf)
    s = moasha()
    assert report(s, "a", lpips=0.2, psnr=31.0) == CONTINUE
    assert report(s, "b", lpips=float("nan"), psnr=30.0) == STOP  # worst LPIPS and worse PSNR: dominated
    assert report(s, "c", psnr=35.0) == CONTINUE  # LPIPS missing but best PSNR: still on the front
    # no finite objective at all (a failing trial's error report): not ranked, so its error is not turned into STOP
    assert report(s, "e", lpips=float("nan"), psnr=float("nan"), trial_status="error") == CONTINUE
    assert "e" not in dict(s.rungs)[1.0]
    assert nondominated_fronts([(math.inf, math.inf), (1.0, 1.0), (math.inf, 0.0)]) == [[1, 2], [0]]


def test_one_objective_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"moasha ranks trials on two or more objectives.*use asha"):
        MOASHAScheduler(["lpips"], ["min"])


def test_state_survives_pickle_and_save_restore(tmp_path):
    s = moasha()
    first = [("x", X), ("p", P), ("d", D)]
    for i, v in first:
        report(s, i, **v)
    copy = pickle.loads(pickle.dumps(s))
    restored = moasha()
    s.save(str(tmp_path / "sched.pkl"))
    restored.restore(str(tmp_path / "sched.pkl"))
    # a fourth trial is judged against the three recorded ones, in every copy alike
    later = [("q", {"lpips": 0.29, "psnr": 33.5}), ("r", {"lpips": 0.04, "psnr": 24.0}),
             ("x", {"lpips": 0.2, "psnr": 35.0})]
    expected = [report(s, i, t=2 if i == "x" else 1, **v) for i, v in later]
    assert expected == [STOP, CONTINUE, CONTINUE]  # q: interior of the front; r: its new LPIPS end
    for other in (copy, restored):
        assert [report(other, i, t=2 if i == "x" else 1, **v) for i, v in later] == expected
        assert other.rungs == s.rungs


def write_space(tmp_path: Path, objectives: str, scheduler: str = "") -> Path:
    (tmp_path / "base.yaml").write_text("{}\n")
    p = tmp_path / "space.yaml"
    p.write_text(f"base: {{config: base.yaml}}\nspace:\n  a.b: {{type: int, low: 0, high: 3}}\n{objectives}{scheduler}")
    return p


def test_default_scheduler_is_moasha_for_two_objectives_and_asha_for_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_space(write_space(tmp_path, "")).scheduler.type == "moasha"  # default objectives: lpips, psnr
    one = "objectives: [{metric: lpips}]\n"
    assert load_space(write_space(tmp_path, one)).scheduler.type == "asha"
    assert load_space(write_space(tmp_path, "", "scheduler: {type: asha}\n")).scheduler.type == "asha"
    with pytest.raises(ConfigError, match=r"space\.yaml:5: scheduler\.type: moasha ranks trials on two or more "
                                          r"objectives, this space has one \(lpips\); use asha"):
        load_space(write_space(tmp_path, one, "scheduler: {type: moasha}\n"))
    assert SearchSpace(objectives=TWO).scheduler_type == "moasha"  # a space built in code resolves the same


def test_preflight_max_t_applies_to_moasha():
    space = SearchSpace(objectives=TWO, scheduler=SchedulerCfg(max_t=3))
    (key, text), = scheduler_problems(space, 3, {})
    assert key == "scheduler.max_t"
    assert re.match(r"3 is at or below the 3 evaluations of each trial: MOASHA would stop", text), text
    assert scheduler_problems(SearchSpace(objectives=TWO, scheduler=SchedulerCfg(type="none", max_t=3)), 3, {}) == []


def test_bench_scheduler_prints_the_table_and_moasha_keeps_more_of_the_front(capsys):
    assert main(["bench-scheduler", "--trials", "80", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"^(moasha|asha|none|random) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +([\d.]+)  (\d+)/(\d+)", out, re.MULTILINE)}
    assert set(rows) == {"moasha", "asha", "none", "random"}, out
    budget = int(re.search(r"budget (\d+) iterations", out).group(1))
    assert all(int(r[5]) <= budget for r in rows.values()) and int(rows["moasha"][5]) == budget, out
    assert int(rows["none"][4]) == int(rows["none"][3]) == 0  # no early stopping: nothing stopped
    assert float(rows["moasha"][6]) >= float(rows["asha"][6]), out


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_tuner_run_with_moasha_completes(tmp_path):
    """A local Ray (own temp dir, stopped by ray.shutdown), 8 trials of the simulation's curves: the run ends with
    no error, MOASHA stops some trials early and lets others reach max_t; the saved Tuner (which holds the
    scheduler) restores."""
    max_t = 9
    temp = tempfile.mkdtemp(prefix="rm", dir="/tmp")  # short: Ray's socket paths must stay < 108 characters
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        space = {"trade": tune.uniform(0, 1), "quality": tune.uniform(0, 1), "speed": tune.uniform(0, 1),
                 "max_t": max_t, "seed": tune.randint(0, 1000)}
        sched = MOASHAScheduler(["lpips", "psnr"], ["min", "max"], max_t=max_t, grace_period=1, reduction_factor=3)
        tuner = tune.Tuner(curve_trainable, param_space=space,
                           tune_config=tune.TuneConfig(scheduler=sched, num_samples=8, max_concurrent_trials=2),
                           run_config=tune.RunConfig(name="m", storage_path=str(tmp_path), verbose=0))
        grid = tuner.fit()
        assert grid.num_errors == 0 and len(grid) == 8
        iters = sorted(r.metrics["training_iteration"] for r in grid)
        assert iters[0] < max_t and iters[-1] == max_t, iters
        assert tune.Tuner.restore(str(tmp_path / "m"), trainable=curve_trainable).get_results().num_errors == 0
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
