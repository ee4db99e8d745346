"""What wraps every trial: a replay for trials already final in Optuna, and the real cause of a failure.

* :func:`guard` wraps the trainable. A trial whose Ray id is in ``recorded`` (final in Optuna, re-run by Ray
  after a driver kill; :func:`isp_search.search.reconcile.recorded_results`) reports its recorded result and
  returns: nothing is trained twice. An exception is reported as a result first (``trial_status: error``, the
  ``UserError`` line or ``Type: message`` as ``fail_reason``, whether it is deterministic, and the Ray node id it
  ran on; Ray's own ``iterations_since_restore`` of that report is 1 when it failed before its first evaluation)
  and then raised, so Ray marks the trial ERROR (``--resume`` re-runs it once the cause is fixed) and the
  searcher tells Optuna that reason instead of a generic "ray error".
* :class:`DeterministicErrors` is the Ray callback that stops a deterministic error (bad config, missing file)
  from being retried ``max_failures`` times: Ray's ``FailureConfig`` cannot filter by exception type, so when
  such a result arrives the trial's own ``max_failures`` is set to 0 just before its error is processed (and
  put back whenever the trial starts again).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import ray
from ray import tune
from ray.tune import Callback

from isp_search.errors import UserError
from isp_search.search.faults import fail_trial_if_asked
from isp_search.search.required import objective_names, with_required

# Retrying these cannot help: the same config and files fail the same way.
DETERMINISTIC: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError,
                                                  IsADirectoryError, PermissionError)
DETERMINISTIC_KEY = "error_deterministic"
NODE_KEY = "error_node"  # the Ray node id the failed attempt ran on (:mod:`isp_search.search.quarantine`)
_MAX_REASON = 500


def error_reason(e: BaseException) -> str:
    """One line: a UserError's own message (it already names file/key/fix), else ``Type: message``."""
    text = " ".join(str(e).split())
    line = text if isinstance(e, UserError) else f"{type(e).__name__}: {text}" if text else type(e).__name__
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 1] + "…"


def guard(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn(config, **kw)`` as a trainable taking ``recorded`` (Ray trial id -> result to replay) too; the
    wrapper keeps ``fn``'s name, which Ray's ``Tuner.restore`` checks."""

    @functools.wraps(fn)
    def run(config: dict[str, Any], *, recorded: dict[str, dict] | None = None, **kw: Any) -> None:
        space = kw.get("space")
        names = objective_names(space) if space is not None else []
        trial_id = tune.get_context().get_trial_id()
        if recorded and trial_id in recorded:
            print(f"trial {trial_id} is already final in the Optuna study: its recorded result is replayed",
                  flush=True)
            tune.report(with_required(dict(recorded[trial_id]), names))
            return
        try:
            fail_trial_if_asked(trial_id)  # test-only: a node that fails every trial (faults.py)
            fn(config, **kw)
        except Exception as e:  # reported (with its real cause), then raised: Ray marks the trial ERROR
            tune.report(with_required({"trial_status": "error", "fail_reason": error_reason(e),
                                       DETERMINISTIC_KEY: int(isinstance(e, DETERMINISTIC)),
                                       NODE_KEY: ray.get_runtime_context().get_node_id()}, names))
            raise

    return run


class DeterministicErrors(Callback):
    """Ray callback: a trial whose error is deterministic fails at once instead of being retried."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial.max_failures = self.max_failures  # a trial re-run by --resume gets its retries back

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(DETERMINISTIC_KEY):
            trial.max_failures = 0  # its exception, which follows this result, is not retried
