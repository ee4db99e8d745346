"""Test-only fault injection: hold a study stage at a known point so a test can kill it there, or make one node fail
every trial it is given.

* With ``ISP_SEARCH_HOLD=<stage>`` (``prepare`` or ``pretrain``) that stage writes ``<exp>/hold-<stage>`` holding
  the waiting process's pid after its first piece of work, then waits to be killed.
* With ``ISP_SEARCH_FAIL_TRIALS=<message>`` in a node's environment (its workers inherit it), every trial that
  starts on that node raises ``FileNotFoundError(<message>)`` before its first evaluation, as on a node whose data
  or storage mount is missing; ``{trial}`` in the message becomes the trial's id, as a trial-specific path would.
  The node check cannot see this (:mod:`isp_search.search.nodes`); the search's quarantine does
  (:mod:`isp_search.search.quarantine`).

Unset, nothing changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

HOLD_ENV = "ISP_SEARCH_HOLD"
FAIL_TRIALS_ENV = "ISP_SEARCH_FAIL_TRIALS"


def hold_marker(exp_uri: str, stage: str) -> str | None:
    """``<exp>/hold-<stage>`` when the tests asked to hold ``stage`` (local storage only), else None."""
    if os.environ.get(HOLD_ENV) != stage or "://" in exp_uri:
        return None
    return f"{exp_uri}/hold-{stage}"


def hold_point(marker: str | os.PathLike | None) -> Callable[[], None] | None:
    """A callable that writes ``marker`` (the pid) and waits forever; None when no hold was asked for."""
    if marker is None:
        return None

    def hold() -> None:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text(str(os.getpid()))
        while True:
            time.sleep(1)

    return hold


def fail_trial_if_asked(trial_id: str) -> None:
    """Raise the node's simulated missing-file error when ``ISP_SEARCH_FAIL_TRIALS`` is set here."""
    message = os.environ.get(FAIL_TRIALS_ENV)
    if message:
        raise FileNotFoundError(message.replace("{trial}", trial_id))
