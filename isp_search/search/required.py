"""The metrics every trial result must name, kept apart from :mod:`isp_search.search.trainable` so that the
trial wrapper (:mod:`isp_search.search.guard`) imports neither torch nor the trainer: a worker running a stand-in
trainable (``isp-search bench-driver``) stays light."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isp_search.search.space import SearchSpace


def objective_names(space: SearchSpace) -> list[str]:
    """The metrics every result must name: the searcher's objectives and the scheduler's scalar."""
    return [*space.metric_names, space.scheduler.metric]


def with_required(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Ray checks that every result names the searcher's and scheduler's metrics: absent ones become NaN
    (latency before the closing report, everything of a diverged trial). NaN never reaches Optuna as a value."""
    for m in names:
        result.setdefault(m, math.nan)
    return result
