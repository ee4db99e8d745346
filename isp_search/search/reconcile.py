"""Keep the Optuna study and Ray's experiment state in step, whatever moment the driver was killed at.

Optuna records a result at once; Ray snapshots its experiment (and the searcher) only periodically. After a kill the two disagree in three ways, each handled here:

* a trial finished in Optuna but RUNNING in Ray's snapshot: Ray re-runs it on ``--resume``. The trainable is
  handed :func:`recorded_results` and replays the recorded final result at once (nothing is trained again), and
  the searcher sees the Optuna trial finished and leaves it alone (never told twice).
* an Optuna trial asked just before the kill, unknown to Ray's snapshot (RUNNING, its Ray id unknown): the next
  trial Ray creates takes it over (:func:`orphans`), so no trial is left behind or sampled twice.
* a trial that failed with an error (FAIL, ``fail_kind: error``) and is re-run by ``--resume`` after the cause
  was fixed: a finished Optuna trial cannot be told again, so its new outcome becomes a new Optuna trial with the
  same parameters and ``retry_of`` naming the old one (:func:`add_retry`, as Optuna's own retry callback does).
  The old one is then *superseded*: :func:`final_trials` lists each Ray trial once, in its final state.

Everything here works on an Optuna study object and reads or writes nothing else; the driver's side of a resume
(files, Ray's saved state) is :mod:`isp_search.search.resume`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

RAY_TRIAL_ATTR = "ray_trial_id"
FAIL_ATTR = "fail_reason"
KIND_ATTR = "fail_kind"  # "error": the trial raised (re-run by --resume); "result": it ran and failed (diverged)
FINAL_ATTR = "final_result"  # the trial's last Ray result (scalars), replayed when Ray re-runs a finished trial
RETRY_ATTR = "retry_of"  # on a re-run's trial: the number of the FAIL trial it replaces
# Ray's own bookkeeping in every result: not part of what a trial produced
_RAY_KEYS = {"done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s",
             "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore", "experiment_tag",
             "checkpoint_dir_name", "should_checkpoint", "config"}


def final_result(result: dict | None) -> dict[str, Any]:
    """What is worth keeping of a Ray result (JSON-safe scalars, no Ray bookkeeping, no NaN)."""
    out: dict[str, Any] = {}
    for k, v in (result or {}).items():
        if k in _RAY_KEYS or k.startswith("config/"):
            continue
        if isinstance(v, (bool, str)) or v is None or (isinstance(v, (int, float)) and math.isfinite(v)):
            out[k] = v
    return out


def superseded(study: optuna.Study) -> set[int]:
    """Numbers of the trials a later re-run replaced."""
    return {int(t.user_attrs[RETRY_ATTR]) for t in study.get_trials(deepcopy=False) if RETRY_ATTR in t.user_attrs}


def final_trials(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    """Every trial of the study except superseded ones: each Ray trial exactly once, in its final state."""
    gone = superseded(study)
    return [t for t in study.get_trials(deepcopy=False, states=states) if t.number not in gone]


def latest_by_ray_id(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Ray trial id -> its newest Optuna trial (a re-run's trial replaces the one it retries)."""
    out: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):
        rid = t.user_attrs.get(RAY_TRIAL_ATTR)
        if rid and (rid not in out or t.number > out[rid].number):
            out[rid] = t
    return out


def rerunnable(t: FrozenTrial) -> bool:
    """A trial that failed by raising (config, file, worker): ``--resume`` runs it again, the rest stay final."""
    return t.state == TrialState.FAIL and t.user_attrs.get(KIND_ATTR) == "error"


def recorded_results(study: optuna.Study, metric_names: list[str]) -> dict[str, dict[str, Any]]:
    """Ray trial id -> the result to replay for every trial that is final in Optuna and must not run again."""
    out: dict[str, dict[str, Any]] = {}
    for rid, t in latest_by_ray_id(study).items():
        if not t.state.is_finished() or rerunnable(t):
            continue
        rec = dict(t.user_attrs.get(FINAL_ATTR) or {})
        if t.state == TrialState.COMPLETE:
            rec.update(dict(zip(metric_names, t.values)), final=1, trial_status="completed")
        elif t.state == TrialState.FAIL:
            rec.update(final=1, trial_status=rec.get("trial_status") or "failed",
                       fail_reason=t.user_attrs.get(FAIL_ATTR, "recorded as failed"))
        out[rid] = {**rec, "reconciled": 1}
    return out


def add_retry(study: optuna.Study, old: FrozenTrial, state: TrialState, values: list[float] | None,
              attrs: dict[str, Any]) -> FrozenTrial:
    """A new finished trial for the re-run of ``old`` (same parameters), naming it in ``retry_of``."""
    keep = {k: v for k, v in old.user_attrs.items() if k not in (FAIL_ATTR, KIND_ATTR, FINAL_ATTR, "stop_reason")}
    trial = optuna.trial.create_trial(
        state=state, values=values if state == TrialState.COMPLETE else None, params=old.params,
        distributions=old.distributions, user_attrs={**keep, **attrs, RETRY_ATTR: old.number})
    study.add_trial(trial)
    return study.get_trials(deepcopy=False)[-1]


def orphans(study: optuna.Study, known_ray_ids: set[str]) -> list[FrozenTrial]:
    """RUNNING Optuna trials whose Ray trial is unknown to the restored experiment (asked just before a kill)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get(RAY_TRIAL_ATTR) not in known_ray_ids]
