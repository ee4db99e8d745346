"""The stand-in trial of ``isp-search bench-driver`` (:mod:`isp_search.diagnostics.bench_driver`), as every trial
worker imports it.

A trial that sleeps through its evaluations and reports the learning curves of
:mod:`isp_search.diagnostics.scheduler_sim` (their Pareto front is known), a small checkpoint at every evaluation and
the closing ``final=1`` report, as :mod:`isp_search.search.trainable` does. Each result also carries the wall time at
the trial's entry and at that report, the GPU it ran on, when its worker process started and whether that worker had
torch loaded, from which the bench measures the time a GPU waits between two trials.

Nothing imported here loads torch: 64 workers with torch (about 0.5 GiB of each process's own memory, 1.2 GiB RSS)
would not fit in 24 GiB. So the workers get the study's space as a :class:`WorkerSpace` (unpickling a
``SearchSpace`` imports ``isp_search.metrics`` and torch), with scheduler_sim's curve pickled by value.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import ray
from ray import tune

from isp_search.search.required import objective_names, with_required


@dataclass(frozen=True)
class Scheduler:
    metric: str


@dataclass(frozen=True)
class WorkerSpace:
    """What a stand-in trial reads of the study's space (``guard`` reads ``metric_names`` and
    ``scheduler.metric``), and the bench's settings; ``curve`` and ``score`` are scheduler_sim's, pickled by value."""

    metric_names: list[str]
    scheduler: Scheduler
    params: dict[str, tuple]  # name -> ("float"|"int", low, high, log) or ("categorical", choices)
    evaluations: int
    trial_seconds: float
    scratch: str  # where the trials write their small checkpoints
    curve: Any = None  # scheduler_sim.Config
    score: Any = None  # scheduler_sim.score
    noise: tuple[float, float] = (0.0, 0.0)


def _unit(value: Any, p: tuple) -> float:
    """A sampled value's place in its range, 0 to 1."""
    if p[0] == "categorical":
        return p[1].index(value) / max(1, len(p[1]) - 1) if value in p[1] else 0.5
    _, low, high, log = p
    if high <= low:
        return 0.5
    return math.log(value / low) / math.log(high / low) if log else (value - low) / (high - low)


def stand_in_trial(config: dict[str, Any], *, space: WorkerSpace, base_cfg: Any = None, score_mode: str = "max",
                   exp_uri: str = "") -> None:
    """A trial that sleeps ``trial_seconds`` over ``evaluations`` reports and closes as the real trainable does.
    The first three searched values, each placed in its range, are the curve's ``trade``, ``quality`` and
    ``speed`` (:class:`isp_search.diagnostics.scheduler_sim.Config`)."""
    start = time.time()
    born = psutil.Process().create_time()  # when this worker process began (a new one per trial, or reused)
    stamp = {"bench/start": start, "bench/born": born, "bench/gpu": ",".join(str(g) for g in ray.get_gpu_ids()),
             "bench/pid": os.getpid(), "bench/torch": int("torch" in sys.modules)}  # torch: 0.5 GiB more a worker
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    units = [_unit(config[k], p) for k, p in space.params.items() if k in config]
    curve = space.curve(*(units + [0.5, 0.5, 0.5])[:3])
    rng = random.Random(zlib.crc32(trial_id.encode()))
    names = objective_names(space)  # type: ignore[arg-type]  # reads metric_names and scheduler.metric only
    n, max_t = space.evaluations, space.evaluations + 1
    ckpt = Path(space.scratch) / trial_id
    ckpt.mkdir(parents=True, exist_ok=True)

    def values(t: int) -> dict[str, float]:
        lp, ps = curve.at(t, max_t)
        if t < max_t:
            lp, ps = lp + rng.gauss(0.0, space.noise[0]), ps + rng.gauss(0.0, space.noise[1])
        return {"lpips": lp, "psnr": ps, space.scheduler.metric: space.score(lp, ps)}

    for t in range(1, n + 1):
        time.sleep(space.trial_seconds / n)
        (ckpt / "search_state.json").write_text(json.dumps({"step": t}))
        result = {**values(t), "step": t, **stamp, "bench/at": time.time()}
        tune.report(with_required(result, names), checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
    # the closing report, as trainable.final_report sends it: the searcher tells Optuna COMPLETE on final=1
    tune.report(with_required({**values(max_t), "final": 1, "trial_status": "completed", "step": n, "best_step": n,
                               **stamp, "bench/at": time.time()}, names))


def as_sent(ws: WorkerSpace) -> WorkerSpace:
    """The deserializer of the space the bench registers with Ray: the worker gets ``ws`` as it was sent."""
    return ws
