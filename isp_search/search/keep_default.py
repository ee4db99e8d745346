"""Early stopping that never stops the default point.

The space's first ``search.points_to_evaluate`` is the study's default baseline (:mod:`isp_search.search.baselines`):
every searched model is judged against it, so it must train the whole budget, as a searched trial that completes
does. A scheduler that would stop it at a rung lets it go on instead; its results still count at every rung, so the
other trials are ranked against it as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from isp_search.search.moasha import MOASHAScheduler
from isp_search.search.worker_reuse import FreedWorkersFirst


class _KeepsDefault:
    """Mixin over a Ray Tune scheduler: ``keep`` (the default point's parameters) is never told to STOP."""

    keep: dict[str, Any] | None = None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and is_point(trial.config, self.keep):
            return TrialScheduler.CONTINUE
        return decision


class DefaultKeepingASHA(_KeepsDefault, FreedWorkersFirst, ASHAScheduler):
    """ASHA on the scalar score that lets the default point finish."""


class DefaultKeepingMOASHA(_KeepsDefault, FreedWorkersFirst, MOASHAScheduler):
    """MOASHA (Pareto rank on the objectives) that lets the default point finish."""


def is_point(config: Mapping[str, Any], point: Mapping[str, Any] | None) -> bool:
    """Whether a trial's sampled ``config`` is ``point`` (floats equal to rounding)."""
    if not point:
        return False
    for key, want in point.items():
        have = config.get(key)
        if isinstance(want, float) or isinstance(have, float):
            if not isinstance(have, (int, float)) or isinstance(have, bool) or \
                    not math.isclose(float(have), float(want), rel_tol=1e-9):
                return False
        elif have != want:
            return False
    return True
