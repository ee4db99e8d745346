"""The Optuna searcher for Ray Tune: multi-objective, persistent study, and the two traps of Ray's
``OptunaSearch`` fixed (docs/method.md §10).

Ray's ``OptunaSearch.on_trial_complete`` tells Optuna COMPLETE for any result it gets, so a trial stopped early by
ASHA would enter the Pareto front with half-trained values, and a non-finite value leaves the Optuna trial RUNNING
forever. ``IspOptunaSearch`` decides the state itself from the trial's last result:

* ``final`` missing (the trainable never sent its closing report) -> PRUNED;
* ``trial_status`` not ``completed`` (diverged, ...) or a non-finite objective -> FAIL, reason in user attr
  ``fail_reason``;
* an error (the trainable raised, or its worker died, more often than ``max_failures``) -> FAIL with the real
  cause (the trainable reports it just before raising, see :mod:`isp_search.search.guard`), ``fail_kind: error``;
* otherwise COMPLETE with the objective values of the final report.

The searcher is idempotent: before telling, it reads the Optuna trial's state from storage, so a result for a
trial that is already finished (Ray re-ran it after a driver kill) is reconciled, never told twice, and the re-run
of a trial that failed by an error becomes a retry trial (:mod:`isp_search.search.reconcile`).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from isp_search.search import journal
from isp_search.search import reconcile as rc
from isp_search.search.optuna_storage import make_storage
from isp_search.search.reconcile import FAIL_ATTR, FINAL_ATTR, KIND_ATTR, RAY_TRIAL_ATTR
from isp_search.search.sampling import define_by_run
from isp_search.search.space import SearchSpace

log = logging.getLogger(__name__)

EXPERIMENT_ATTR = "experiment"
RAY_ERROR = "the trial's worker failed (Ray error, no exception reported); see error.txt in its trial folder"
__all__ = ["FAIL_ATTR", "RAY_TRIAL_ATTR", "IspOptunaSearch", "decide_state", "make_searcher"]


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


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def decide_state(result: dict | None, metrics: list[str], error: bool) -> tuple[TrialState, list[float] | None, str]:
    """Optuna state, objective values and a reason for a finished Ray trial (pure, so it is unit-tested)."""
    result = result or {}
    if error or result.get("trial_status") == "error":
        return TrialState.FAIL, None, str(result.get("fail_reason") or RAY_ERROR)
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
    """``OptunaSearch`` that records Ray trial ids on the Optuna trials, tells the right final state once, and
    reconciles with the study after a restore (see the module docstring)."""

    def __init__(self, *args: Any, experiment: str = "", journal_files: tuple[str, str | None] = ("", None),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._experiment = experiment
        self._journal = journal_files  # (local journal, its object-store copy): pushed after every finished trial
        self._errors: dict[str, dict] = {}  # Ray trial id -> its last error result (Ray passes none on error)
        self._orphans: list[int] = []  # Optuna trial ids to hand to the next new Ray trials (after a restore)
        if self._ot_study is not None:
            with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names(self.metric if isinstance(self.metric, list) else [self.metric])

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.__dict__.setdefault("_errors", {})  # state saved by an older version
        self.__dict__.setdefault("_journal", ("", None))
        known = set(self._ot_trials)
        self._orphans = [t._trial_id for t in rc.orphans(self._ot_study, known)]
        if self._orphans:
            log.info("%d Optuna trial(s) asked before the driver stopped are taken over by the next trials",
                     len(self._orphans))

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            # an orphan already holds sampled parameters; the define-by-run function reads them back
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, self._orphans.pop(0))
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ATTR, trial_id)
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and ot_trial.user_attrs.get(RAY_TRIAL_ATTR) != trial_id:
            ot_trial.set_user_attr(RAY_TRIAL_ATTR, trial_id)
            ot_trial.set_user_attr(EXPERIMENT_ATTR, self._experiment)
        return params

    def _current(self, trial_id: str) -> FrozenTrial:
        """The Optuna trial that stands for this Ray trial now (a retry trial replaces the one it retries)."""
        latest = rc.latest_by_ray_id(self._ot_study).get(trial_id)
        return latest or self._ot_study._storage.get_trial(self._ot_trials[trial_id]._trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._ot_trials:
            return
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if error and not (result or {}).get("fail_reason"):
            result = self._errors.get(trial_id, result)
        state, values, reason = decide_state(result, metrics, error)
        attrs: dict[str, Any] = {FINAL_ATTR: rc.final_result(result)}
        if reason:
            attrs[FAIL_ATTR if state == TrialState.FAIL else "stop_reason"] = reason
        if state == TrialState.FAIL:
            attrs[KIND_ATTR] = "error" if error or (result or {}).get("trial_status") == "error" else "result"
        if result and result.get("training_iteration") is not None:
            attrs["reports"] = int(result["training_iteration"])
        current = self._current(trial_id)
        if not current.state.is_finished():
            ot_trial = self._ot_trials[trial_id]
            for k, v in attrs.items():
                ot_trial.set_user_attr(k, v)
            self._ot_study.tell(ot_trial, values if state == TrialState.COMPLETE else None, state=state)
        elif rc.rerunnable(current) and not (result or {}).get("reconciled"):
            new = rc.add_retry(self._ot_study, current, state, values, attrs)
            log.info("trial %s re-ran after an error: Optuna trial #%d (%s) replaces #%d", trial_id, new.number,
                     state.name, current.number)
        else:
            log.info("trial %s is already %s in the Optuna study (#%d): reconciled, not told again", trial_id,
                     current.state.name, current.number)
        self._errors.pop(trial_id, None)
        self._completed_trials.add(trial_id)
        journal.push(*self._journal)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("fail_reason") and result.get("trial_status") == "error":
            self._errors[trial_id] = {k: result[k] for k in ("fail_reason", "trial_status") if k in result}
        # Multi-objective studies take no intermediate values; a finished trial takes none either.
        if not isinstance(self.metric, list) and not self._current(trial_id).state.is_finished():
            super().on_trial_result(trial_id, result)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


def make_searcher(space: SearchSpace, study_name: str, storage: str, experiment: str) -> IspOptunaSearch:
    """The searcher for ``space``: multi-objective metric/mode lists, the paper's defaults enqueued first.

    A study that already has trials (the driver was killed after asking one but before Ray saved any state) is
    continued: its points are not enqueued twice and its RUNNING trials are taken over by the first Ray trials."""
    backend = make_storage(storage)
    try:
        existing = optuna.load_study(study_name=study_name, storage=backend).get_trials(deepcopy=False)
    except KeyError:  # a new study
        existing = []
    searcher = IspOptunaSearch(
        space=define_by_run(space),
        metric=space.metric_names,
        mode=space.modes,
        points_to_evaluate=None if existing else [dict(p) for p in space.search.points_to_evaluate] or None,
        sampler=make_sampler(space),
        study_name=study_name,
        storage=backend,
        experiment=experiment,
        journal_files=(storage, journal.mirror_uri(space.storage.path, experiment, storage)),
    )
    searcher._orphans = [t._trial_id for t in existing if t.state == TrialState.RUNNING]
    return searcher
