"""The driver's trial table: printed when something changed (a trial started, stopped, failed or was pruned),
at most 120 columns wide, plain text, and a failed trial as one line instead of Ray's traceback.

Ray's own ``CLIReporter`` prints the whole ``psql`` table on a timer: about 200 columns with the full dotted
parameter names and a location column, five status lines and a "Result logdir" pointing into Ray's session temp
folder. Here the trials print their own progress lines (``trial 1bd6f84a: 5/10 step ...``), so the table is
news only: one header line, one row per trial (short parameter names, the objectives, step, state).
"""

from __future__ import annotations

import math
import pickle
import re
import time
from pathlib import Path
from typing import Any

from ray import cloudpickle
from ray.exceptions import RayActorError, RayTaskError
from ray.tune import CLIReporter

from isp_search.search.guard import error_reason

WIDTH = 120
_VOWELS = re.compile(r"(?<=.)[aeiou]")


class TrialTable(CLIReporter):
    def __init__(self, *args: Any, min_gap_s: float = 10.0, width: int = WIDTH, **kwargs: Any) -> None:
        super().__init__(*args, max_report_frequency=int(min_gap_s), **kwargs)
        self._min_gap_s, self._width = min_gap_s, width
        self._states: tuple = ()  # what the last table showed
        self._failures: dict[str, int] = {}  # trial id -> failures already said
        self._printed_at, self._started = -float("inf"), time.time()
        self._legend_said = False

    def should_report(self, trials: list, done: bool = False) -> bool:
        if any(t.num_failures > self._failures.get(t.trial_id, 0) for t in trials):
            return True  # a failure is said at once
        changed = _states(trials) != self._states
        return changed and (done or time.time() - self._printed_at >= self._min_gap_s)

    def report(self, trials: list, done: bool, *sys_info: str) -> None:
        lines = []
        for t in trials:
            if t.num_failures > self._failures.get(t.trial_id, 0):
                self._failures[t.trial_id] = t.num_failures
                lines.append(clip(failure_line(t), self._width))
        if _states(trials) != self._states or done:
            self._states, self._printed_at = _states(trials), time.time()
            lines += self.table(trials, sys_info)
        if lines:
            print("\n".join(lines), flush=True)

    def table(self, trials: list, sys_info: tuple[str, ...] = ()) -> list[str]:
        """Header line, column names and one row per trial, every line at most ``width`` columns."""
        counts: dict[str, int] = {}
        for t in trials:
            counts[state_of(t)] = counts.get(state_of(t), 0) + 1
        usage = next((ln.split(":", 1)[1].strip() for s in sys_info for ln in s.splitlines()
                      if ln.startswith("Logical resource usage")), "")
        total = self._total_samples if isinstance(self._total_samples, int) and self._total_samples > 0 else "?"
        head = (f"trials {len(trials)} of {total} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"
                + (f"; {usage}" if usage else "") + f"; {_elapsed(time.time() - self._started)}")
        params = list(self._parameter_columns)
        names = short_names(params)
        metrics = list(self._metric_columns)
        rows = [[t.trial_id, state_of(t)] + [_value(_param(t, p)) for p in params]
                + [_value(t.last_result.get(m)) for m in metrics] for t in _ordered(trials)]
        shown = self._metric_columns if isinstance(self._metric_columns, dict) else {m: m for m in metrics}
        cols = ["trial", "state"] + [names[p] for p in params] + [str(shown[m]) for m in metrics]
        hidden = 0
        while params and _width(cols, rows) > self._width:  # too many parameters: the rightmost ones go
            i = 2 + len(params) - 1
            params.pop()
            hidden += 1
            cols.pop(i)
            for r in rows:
                r.pop(i)
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
        out = [clip(head, self._width), "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
        out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        if hidden:
            out.append(f"({hidden} more parameter(s) in each trial's params.json)")
        shortened = [f"{names[p]} = {p}" for p in params if names[p] != p]
        if shortened and not self._legend_said:
            self._legend_said = True
            out += wrap("columns: " + ", ".join(shortened), self._width)
        return out


def _states(trials: list) -> tuple:
    # a trial queued is no news; one started, finished, pruned or failed is
    return tuple(sorted((t.trial_id, state_of(t)) for t in trials if t.status != "PENDING" or t.num_failures))


def state_of(trial: Any) -> str:
    """Ray's status, with TERMINATED told apart as Optuna will tell it: COMPLETE, FAIL or PRUNED (stopped early
    by the scheduler, so no closing result)."""
    if trial.status != "TERMINATED":
        return str(trial.status)
    last = trial.last_result or {}
    if not last.get("final"):
        return "PRUNED"
    return "COMPLETE" if last.get("trial_status") == "completed" else "FAIL"


def failure_line(trial: Any) -> str:
    """``trial 1bd6f84a: its worker was lost (ActorDiedError); attempt 2 starts from its last checkpoint`` or, not
    retried, the cause and where the traceback is."""
    err = _error(trial)
    if isinstance(err, RayTaskError) and err.cause is not None:
        cause = error_reason(err.cause)
    elif isinstance(err, RayActorError):
        cause = f"its worker was lost ({type(err).__name__})"  # its node died, or the process was killed
    elif err is not None:
        cause = error_reason(err)
    else:
        cause = "failed"
    if trial.status == "ERROR":
        where = Path(trial.path) / "error.txt" if trial.path else "error.txt"
        return f"trial {trial.trial_id}: {cause}; not retried (traceback: {where})"
    return f"trial {trial.trial_id}: {cause}; attempt {trial.num_failures + 1} starts from its last checkpoint"


def _error(trial: Any) -> BaseException | None:
    path = trial.pickled_error_file
    if not path or not Path(path).is_file():
        return None
    try:
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except (OSError, EOFError, ImportError, AttributeError, TypeError, ValueError, pickle.UnpicklingError):
        return None  # an exception that does not unpickle here: the line still says the trial failed


def short_names(keys: list[str]) -> dict[str, str]:
    """Column names for dotted parameter keys: the last component (two where that is ambiguous), vowels after a
    word's first letter dropped while longer than 10 characters (``optim.d_texture_lr`` -> ``d_txtr_lr``)."""
    out = {}
    for k in keys:
        parts = k.split(".")
        name = parts[-1] if sum(p.split(".")[-1] == parts[-1] for p in keys) == 1 else ".".join(parts[-2:])
        if len(name) > 10:
            name = "_".join(_VOWELS.sub("", w) for w in name.split("_"))
        out[k] = name[:12]
    return out


def _param(trial: Any, key: str) -> Any:
    config = trial.config or {}
    if key in config:
        return config[key]
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ordered(trials: list) -> list:
    order = {"RUNNING": 0, "PENDING": 1, "ERROR": 2}
    return sorted(trials, key=lambda t: order.get(t.status, 3))


def _width(cols: list[str], rows: list[list[str]]) -> int:
    return sum(max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)) \
        + 2 * (len(cols) - 1)


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def clip(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """``text`` broken after commas into lines of at most ``width`` columns (continuations indented)."""
    lines, current = [], ""
    for piece in text.split(", "):
        candidate = f"{current}, {piece}" if current else piece
        if current and len(candidate) > width:
            lines.append(current + ",")
            current = "  " + piece
        else:
            current = candidate
    return [clip(ln, width) for ln in [*lines, current]]
