"""Ray Tune's trial table, printed when it has news (a trial started, stopped or failed) or every ``heartbeat_s``.

Ray's own ``CLIReporter`` prints the whole table on a timer, with a "Result logdir" pointing into Ray's session
temp folder (not the experiment storage, which the search summary names): a demo's output became screens of the
same table. Same table, printed less often, without that line.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import CLIReporter


class TrialTable(CLIReporter):
    def __init__(self, *args: Any, heartbeat_s: float = 120.0, min_gap_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, max_report_frequency=int(heartbeat_s), **kwargs)
        self._heartbeat_s, self._min_gap_s = heartbeat_s, min_gap_s
        self._states: tuple = ()  # nothing running yet
        self._printed_at, self._started = -float("inf"), time.time()

    def should_report(self, trials: list, done: bool = False) -> bool:
        # a trial queued is no news; one started, finished or failed is
        states = tuple(sorted((t.trial_id, t.status) for t in trials if t.status != "PENDING"))
        now = time.time()
        since = now - self._printed_at
        changed = states != self._states
        quiet_for = now - max(self._printed_at, self._started)
        if (done and (changed or since >= self._min_gap_s)) or (changed and since >= self._min_gap_s) \
                or quiet_for >= self._heartbeat_s:
            self._states, self._printed_at = states, now
            return True
        return False

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        text = self._progress_str(trials, done, *sys_info)
        print("\n".join(ln for ln in text.splitlines() if not ln.startswith("Result logdir:")), flush=True)
