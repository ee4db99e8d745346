"""The study's Pareto front: which COMPLETE trials are on it and which of them are exported.

The front comes from the Optuna study (only COMPLETE trials, so ASHA-pruned and failed ones never enter it). Up to
``export.top_k`` of its trials, spread evenly along it (both ends and between, not one end), are exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from isp_search.search.reconcile import FAIL_ATTR, FINAL_ATTR, RAY_TRIAL_ATTR
from isp_search.search.space import SearchSpace


@dataclass
class ParetoEntry:
    number: int
    trial_id: str
    values: dict[str, float]
    params: dict[str, Any]
    exported: bool = False
    note: str = ""
    latency_ms: float | None = None
    model_id: str = ""
    latency_target: str | None = None
    test: dict[str, float] = field(default_factory=dict)  # its closing report's test metrics (the best checkpoint)
    duplicate_of: str | None = None  # the leaderboard row that holds the same deployed weights
    confirmed: Any = None  # isp_search.search.confirm.Confirmed: its values over seeds (the confirmation stage)


@dataclass
class PostSummary:
    study: optuna.Study
    pareto: list[ParetoEntry] = field(default_factory=list)
    baselines: list[Any] = field(default_factory=list)  # isp_search.search.baselines.Baseline: start, default
    leaderboard: Path | None = None
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)


def close_orphans(study: optuna.Study, ray_trial_ids: set[str]) -> int:
    """Mark FAIL the Optuna trials left RUNNING with no finished Ray trial (asked just before a driver died)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.user_attrs.get(RAY_TRIAL_ATTR) in ray_trial_ids and t.state == TrialState.RUNNING:
            reason = "the Ray trial ended without a final result"
        else:
            reason = "orphaned: the driver stopped before Ray recorded this trial"
        # Trial(study, id) is Optuna's handle for a live trial; it is how user attributes are written.
        optuna.trial.Trial(study, t._trial_id).set_user_attr(FAIL_ATTR, reason)
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    return n


def pareto_trials(study: optuna.Study, space: SearchSpace) -> list[optuna.trial.FrozenTrial]:
    """Pareto-optimal COMPLETE trials, ordered by the first objective (best first)."""
    best = study.best_trials if len(space.objectives) > 1 else ([study.best_trial] if n_complete(study) else [])
    sign = 1 if space.objectives[0].direction == "min" else -1
    return sorted(best, key=lambda t: sign * t.values[0])


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``0..n-1`` (both ends included): the trials exported from a front of n."""
    if k <= 0:
        return []
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def export_choice(study: optuna.Study, space: SearchSpace) -> list[optuna.trial.FrozenTrial]:
    """The Pareto trials the export stage exports: ``export.top_k`` spread along the front, less those whose best
    evaluation was their start (step 0: nothing new to export). The confirmation stage re-trains these."""
    front = pareto_trials(study, space)
    chosen = set(spread(len(front), space.export.top_k))
    return [t for rank, t in enumerate(front) if rank in chosen and (t.user_attrs.get(FINAL_ATTR) or {}).get(
        "best_step") != 0]


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


