"""MOASHA: asynchronous successive halving that promotes trials by Pareto rank on every objective, not one scalar.

The rungs are ASHA's (:class:`ray.tune.schedulers.ASHAScheduler`, one bracket): ``grace_period * reduction_factor**k``
iterations of ``time_attr`` below ``max_t``. A trial reaching a rung is recorded there with its objective values and
continues if it is within the top ``1/reduction_factor`` of the trials recorded at that rung (itself included),
ordered as NSGA-II orders a population: by non-dominated front, then by crowding distance (larger first) within a
front, which keeps both ends of a front and spreads the rest. ASHA on a scalar such as ``psnr - 10 * lpips`` stops
the trials at the end of the front the scalar does not favour; MOASHA keeps them. A missing or non-finite value
counts as the worst on its objective (a latency measured only at the closing report is then the same for all and
decides nothing); a result with no finite objective at all (the error report of a failing trial) is not ranked,
so the trial fails as it would under ASHA.

The state is plain lists and dicts, so the scheduler pickles: Ray stores it inside the Tuner it restores on a driver
resume, and :meth:`MOASHAScheduler.save` / :meth:`~MOASHAScheduler.restore` write it as ASHA's do.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from isp_search.errors import UserError

Point = tuple[float, ...]  # objective values signed so that smaller is better; +inf = missing (the worst)


def to_minimised(result: Mapping[str, Any], metrics: Sequence[str], modes: Sequence[str]) -> Point:
    """The objective values of ``result`` as a point to minimise: a ``max`` objective is negated, a missing or
    non-finite value becomes +inf."""
    out = []
    for m, mode in zip(metrics, modes):
        v = result.get(m)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        out.append((float(v) if mode == "min" else -float(v)) if ok else math.inf)
    return tuple(out)


def nondominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` (minimised), front by front: the first is dominated by none, the next only by the
    first, and so on (non-dominated sorting; ``a`` dominates ``b`` when it is no worse on every objective and
    better on one)."""
    p = np.asarray(points, dtype=float).reshape(len(points), -1)
    # beats[i, j]: point i dominates point j (+inf, a missing value, equals +inf and is worse than any number)
    beats = (p[:, None, :] <= p[None, :, :]).all(-1) & (p[:, None, :] < p[None, :, :]).any(-1)
    beaten_by = beats.sum(0)
    left = np.ones(len(p), dtype=bool)
    fronts: list[list[int]] = []
    while left.any():
        front = np.flatnonzero(left & (beaten_by == 0))
        fronts.append(front.tolist())
        left[front] = False
        beaten_by = beaten_by - beats[front].sum(0)
    return fronts


def crowding_distances(front: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance of each point of one front: the two ends of every objective get +inf, the others
    the sum over objectives of the gap between their neighbours, relative to that objective's span. A missing value
    sits beyond the worst present one; an objective missing on every point adds nothing."""
    n = len(front)
    if n <= 2:
        return [math.inf] * n
    dist = [0.0] * n
    for k in range(len(front[0])):
        present = [p[k] for p in front if math.isfinite(p[k])]
        if not present:
            continue
        lo, hi = min(present), max(present)
        beyond = hi + (hi - lo or 1.0)
        col = [p[k] if math.isfinite(p[k]) else beyond for p in front]
        order = sorted(range(n), key=col.__getitem__)
        span = col[order[-1]] - col[order[0]]
        if span <= 0:
            continue
        dist[order[0]] = dist[order[-1]] = math.inf
        for a, i, b in zip(order, order[1:], order[2:]):
            dist[i] += (col[b] - col[a]) / span
    return dist


def rank_keys(points: Sequence[Point]) -> list[tuple[int, float]]:
    """(front, -crowding distance) of every point: the NSGA-II order, smaller is better."""
    keys: list[tuple[int, float]] = [(0, 0.0)] * len(points)
    for r, front in enumerate(nondominated_fronts(points)):
        for i, d in zip(front, crowding_distances([points[i] for i in front])):
            keys[i] = (r, -d)
    return keys


def within_top(points: Sequence[Point], index: int, keep: int) -> bool:
    """Whether ``points[index]`` is among the best ``keep`` (fewer than ``keep`` points rank strictly better; ties
    with the last one kept are kept too)."""
    keys = rank_keys(points)
    return sum(k < keys[index] for k in keys) < keep


class MOASHAScheduler(FIFOScheduler):
    """Asynchronous successive halving on several objectives (see the module docstring)."""

    _supports_buffered_results = False  # every result is a rung decision, as for ASHA

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], time_attr: str = "training_iteration",
                 max_t: float = 100, grace_period: float = 1, reduction_factor: float = 4) -> None:
        if len(metrics) < 2:
            raise UserError(f"moasha ranks trials on two or more objectives, got {list(metrics)}; use asha for one")
        if len(modes) != len(metrics) or any(m not in ("min", "max") for m in modes):
            raise UserError(f"moasha needs one mode ('min' or 'max') per objective {list(metrics)}, got {list(modes)}")
        if not (grace_period > 0 and max_t > 0 and reduction_factor > 1):
            raise UserError(f"moasha needs grace_period > 0, max_t > 0 and reduction_factor > 1, got grace_period="
                            f"{grace_period}, max_t={max_t}, reduction_factor={reduction_factor}")
        super().__init__()
        self._metrics, self._modes = list(metrics), list(modes)
        # Ray checks that every result names the scheduler's metric; the trainable reports every objective
        self._metric = self._metrics[0]
        self._time_attr, self._max_t, self._rf = time_attr, max_t, float(reduction_factor)
        n_rungs = int(math.log(max_t / grace_period) / math.log(self._rf) + 1)  # ASHA's count (none past max_t)
        # highest rung first; each maps trial id -> its point when it reached the rung
        self._rungs: list[tuple[float, dict[str, Point]]] = [
            (grace_period * self._rf ** k, {}) for k in reversed(range(n_rungs))]
        self._num_stopped = 0

    @property
    def rungs(self) -> list[tuple[float, dict[str, Point]]]:
        """(milestone, trial id -> recorded point), highest milestone first."""
        return self._rungs

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """The objectives are the scheduler's own; a Tuner-level metric may only name one of them."""
        return metric is None or metric in self._metrics

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:  # the closing report: the trial is done
            decision = TrialScheduler.STOP
        elif not self._rankable(result):
            # e.g. the error report a failing trial sends before it raises (search.guard): stopping it here would
            # turn its ERROR (retried, re-run by --resume) into a finished trial; ASHA lets a NaN score pass too
            decision = TrialScheduler.CONTINUE
        else:
            decision = self._record(trial.trial_id, result)
        if decision == TrialScheduler.STOP:
            self._num_stopped += 1
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if self._time_attr in result and self._rankable(result):
            self._record(trial.trial_id, result)  # only fills a rung the trial had not been recorded at

    def _rankable(self, result: Mapping[str, Any]) -> bool:
        """At least one objective has a finite value (the others then count as the worst)."""
        return any(math.isfinite(v) for v in to_minimised(result, self._metrics, self._modes))

    def _record(self, trial_id: str, result: Mapping[str, Any]) -> str:
        """Record the trial at the highest rung it reached and has not been recorded at, and decide there."""
        t = result[self._time_attr]
        for milestone, recorded in self._rungs:
            if t < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = to_minimised(result, self._metrics, self._modes)
            ids = list(recorded)
            keep = max(1, math.ceil(len(ids) / self._rf))
            if within_top([recorded[i] for i in ids], ids.index(trial_id), keep):
                return TrialScheduler.CONTINUE
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        rungs = ", ".join(f"iter {m:g}: {len(r)}" for m, r in reversed(self._rungs))
        return (f"Using MOASHA on {', '.join(f'{m} ({d})' for m, d in zip(self._metrics, self._modes))}: "
                f"num_stopped={self._num_stopped}; trials recorded per rung: {rungs}")

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
