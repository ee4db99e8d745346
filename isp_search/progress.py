"""Progress that suits where the output goes (STYLE rule 13): a tqdm bar on a terminal, otherwise one plain line
every ``every_s`` seconds, one whenever the caller has news (:meth:`Progress.print_line`) and one at the end, so job
logs, CI and Ray output (a Ray worker's output is never a terminal) get no carriage-return redraws."""

from __future__ import annotations

import sys
import time
from typing import Any, Self, TextIO

from tqdm import tqdm


class Progress:
    """``update(n)``, ``set_postfix(**values)``, ``close()`` (the part of tqdm's interface the code uses), and
    ``print_line()``: a plain line now (an evaluation's numbers), nothing extra on a terminal, where the bar shows
    them."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True,
                 every_s: float = 30.0, stream: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = self.start_n = initial
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.postfix: dict[str, Any] = {}
        self.t0 = self.last = time.monotonic()
        self.bar = None
        self.closed = False
        self.printed_n = initial  # the step of the last plain line: the closing line is not a repeat of it
        if enabled and _isatty(self.stream):
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=self.stream)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last >= self.every_s and self.n < self.total:
            self.print_line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n > self.printed_n:
            self.print_line()

    def print_line(self) -> None:
        """One plain line: ``desc: n/total unit (pct), rate unit/s, eta ..., postfix``; nothing on a terminal."""
        if self.bar is not None or not self.enabled:
            return
        now = time.monotonic()
        self.last, self.printed_n = now, self.n
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}", f"{rate:.3g} {self.unit}/s"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        print(", ".join(parts), file=self.stream, flush=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
