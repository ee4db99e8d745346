"""Test-only fault injection: hold a study stage at a known point so a test can kill it there.

With ``ISP_SEARCH_HOLD=<stage>`` (``prepare`` or ``pretrain``) that stage writes ``<exp>/hold-<stage>`` holding
the waiting process's pid after its first piece of work, then waits to be killed. Unset, nothing changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

HOLD_ENV = "ISP_SEARCH_HOLD"


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
