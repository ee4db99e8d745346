"""Trials in reused workers: a trial starts in the Ray worker that the last trial on its GPU ran in (Ray Tune's
``reuse_actors``, set by :func:`isp_search.search.tuner.fit`), so a worker imports torch and the trainer once, not
once per trial.

Ray Tune gives a freed worker to the trial its scheduler's ``choose_trial_to_run`` names. The FIFO default names
the oldest pending trial, even while a new worker is starting for it, and Tune then stops the starting one. While
trials end faster than a worker starts (early stopping at the first rung, a node slow to start workers, a worker
lost to an error), the workers never grow past those up when the first trial ended: 47 of 64 GPUs in
docs/benchmarks.md ("Driver at scale"). :class:`FreedWorkersFirst` names none, so Tune starts the pending trials in
order and gives a freed worker to a trial that has no worker starting. A trial still pending when no more are to be
created does take a freed worker, and the one starting for it is stopped.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler


class FreedWorkersFirst:
    """Mixin over a Ray Tune scheduler that never pauses a trial: ``choose_trial_to_run`` names none."""

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        return None


class InOrder(FreedWorkersFirst, FIFOScheduler):
    """No early stopping (``scheduler.type: none``); trials start as :class:`FreedWorkersFirst` says."""
