"""The Optuna searcher for Ray Tune: multi-objective, persistent study, and the two traps of SPEC section 10 fixed.

Ray's ``OptunaSearch.on_trial_complete`` tells Optuna COMPLETE for any result it gets, so a trial stopped early by
ASHA would enter the Pareto front with half-trained values, and a non-finite value leaves the Optuna trial RUNNING
forever. ``IspOptunaSearch`` decides the state itself from the trial's last result:

* ``final`` missing (the trainable never sent its closing report) -> PRUNED;
* ``trial_status`` not ``completed`` (diverged, ...) or a non-finite objective -> FAIL, reason in user attr
  ``fail_reason``;
* a Ray error (the trial failed more often than ``max_failures``) -> FAIL with reason ``ray error``;
* otherwise COMPLETE with the objective values of the final report.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from isp_search.search.space import SearchSpace, define_by_run

log = logging.getLogger(__name__)

RAY_TRIAL_ATTR = "ray_trial_id"
FAIL_ATTR = "fail_reason"
EXPERIMENT_ATTR = "experiment"


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named in the YAML, seeded."""
    seed = space.search.seed
    multi = len(space.objectives) > 1
    if space.search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          n_startup_trials=min(10, max(1, space.search.num_samples // 3)))
    if space.search.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(1, space.search.num_samples // 3)))
    if space.search.sampler == "nsga2":
        if not multi:
            log.warning("nsga2 is meant for several objectives; it runs on one too")
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, space.search.max_concurrent * 2))
    return optuna.samplers.RandomSampler(seed=seed)


def make_storage(url_or_path: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///...``, ``postgresql://...``) or a JournalStorage file (open-lock: NFS-safe)."""
    if "://" in url_or_path:
        return optuna.storages.RDBStorage(url_or_path)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    Path(url_or_path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url_or_path, lock_obj=JournalFileOpenLock(url_or_path)))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def decide_state(result: dict | None, metrics: list[str], error: bool) -> tuple[TrialState, list[float] | None, str]:
    """Optuna state, objective values and a reason for a finished Ray trial (pure, so it is unit-tested)."""
    result = result or {}
    if error:
        return TrialState.FAIL, None, str(result.get("fail_reason") or "ray error (trial failed after retries)")
    status = result.get("trial_status")
    if status not in (None, "completed"):
        return TrialState.FAIL, None, f"{status}: {result.get('fail_reason') or 'no reason given'}"
    if not result.get("final"):
        return TrialState.PRUNED, None, "stopped early by the scheduler"
    values = [result.get(m) for m in metrics]
    bad = [m for m, v in zip(metrics, values) if not _finite(v)]
    if bad:
        return TrialState.FAIL, None, f"non-finite objective {bad[0]}={result.get(bad[0])!r}"
    return TrialState.COMPLETE, [float(v) for v in values], ""


class IspOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that records Ray trial ids on the Optuna trials and tells the right final state."""

    def __init__(self, *args: Any, experiment: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._experiment = experiment

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and RAY_TRIAL_ATTR not in ot_trial.user_attrs:
            ot_trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
            ot_trial.set_user_attr(EXPERIMENT_ATTR, self._experiment)
        return params

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        state, values, reason = decide_state(result, metrics, error)
        if reason:
            ot_trial.set_user_attr(FAIL_ATTR if state == TrialState.FAIL else "stop_reason", reason)
        if result and result.get("training_iteration") is not None:
            ot_trial.set_user_attr("reports", int(result["training_iteration"]))
        self._ot_study.tell(ot_trial, values if state == TrialState.COMPLETE else None, state=state)
        self._completed_trials.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Multi-objective studies take no intermediate values; nothing to do for them.
        if not isinstance(self.metric, list):
            super().on_trial_result(trial_id, result)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


def make_searcher(space: SearchSpace, study_name: str, storage: str, experiment: str) -> IspOptunaSearch:
    """The searcher for ``space``: multi-objective metric/mode lists, the paper's defaults enqueued first."""
    return IspOptunaSearch(
        space=define_by_run(space),
        metric=space.metric_names,
        mode=space.modes,
        points_to_evaluate=[dict(p) for p in space.search.points_to_evaluate] or None,
        sampler=make_sampler(space),
        study_name=study_name,
        storage=make_storage(storage),
        experiment=experiment,
    )


def load_study(study_name: str, storage: str) -> optuna.Study:
    """Open a finished or running study (read-only use)."""
    if "://" not in storage and not os.path.exists(storage):
        raise FileNotFoundError(storage)
    return optuna.load_study(study_name=study_name, storage=make_storage(storage))
