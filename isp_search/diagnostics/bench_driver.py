"""The search driver at scale, by simulation (``isp-search bench-driver``).

The real driver — :func:`isp_search.search.tuner.fit` with the study's Optuna searcher and journal, MOASHA, the trial
wrapper ``guard``, the callbacks and the trial table, on a :class:`~isp_search.search.context.StudyContext` opened
as a study opens it — runs on one local Ray instance this module starts with ``concurrent`` logical GPUs, against
the stand-in trial of :mod:`isp_search.diagnostics.driver_stand_in`. From the wall times its results carry, the bench
measures per GPU the time from one trial's end to the next one's start; it also times the searcher inside the
driver and the sampler on the finished study, samples the CPU and memory of the processes it started, and reads the
sizes of the journal and of Ray's experiment state.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import resource
import shutil
import signal
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import optuna
import psutil
import ray
from optuna.trial import TrialState

from isp_search.diagnostics import scheduler_sim
from isp_search.diagnostics.driver_stand_in import Scheduler, WorkerSpace, as_sent, stand_in_trial
from isp_search.errors import UserError
from isp_search.quiet import ray_runtime_env
from isp_search.search.cluster import TUNE_ENV
from isp_search.search.context import StudyContext, open_study
from isp_search.search.experiment import write_meta
from isp_search.search.optuna_storage import make_storage
from isp_search.search.sampling import suggest
from isp_search.search.searcher import IspOptunaSearch, make_sampler
from isp_search.search.space import PretrainCfg, Resources, SearchSpace, StorageCfg
from isp_search.search.space_file import load_space
from isp_search.search.tuner import fit

SPACE_FILE = Path(__file__).resolve().parents[2] / "search_spaces" / "efficient_isp_unpaired_mai2022.yaml"
SAMPLER_MARKS = (0, 64, 128, 256, 512)  # finished trials at which the sampler's time per suggestion is taken


@contextlib.contextmanager
def light_workers(ws: WorkerSpace) -> Iterator[None]:
    """While it lasts, a ``SearchSpace`` sent to a Ray worker arrives there as ``ws`` (the driver keeps the real
    one), with scheduler_sim's curve pickled by value so that the worker never imports scheduler_sim (torch)."""
    ray.cloudpickle.register_pickle_by_value(scheduler_sim)
    ray.util.register_serializer(SearchSpace, serializer=lambda _: ws, deserializer=as_sent)
    try:
        yield
    finally:
        ray.util.deregister_serializer(SearchSpace)
        ray.cloudpickle.unregister_pickle_by_value(scheduler_sim)


class Probe:
    """Every second, the memory and CPU time of the processes this run started (Ray's head and its workers: our
    process's children). An exited worker's CPU is its last sample: at most a second of it is missed (the raylet's
    children are not accounted to it). When available memory falls below ``floor_bytes`` it interrupts the search
    (SIGINT, which Ray Tune takes as a stop) before the machine runs out."""

    def __init__(self, floor_bytes: int, period_s: float = 1.0) -> None:
        self._me, self._period, self._floor = psutil.Process(), period_s, floor_bytes
        self.peak_rss, self.min_available, self.own_cpu_s = 0, psutil.virtual_memory().available, 0.0
        self.stopped: str = ""  # why the search was interrupted
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (head | workers, CPU seconds at its last sample)
        self._worker_rss: dict[int, int] = {}  # pid -> its largest RSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-driver-probe", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        rss = 0
        for p in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmd = p.cmdline()
                worker = bool(cmd) and (cmd[0].startswith("ray::") or any("default_worker.py" in a for a in cmd))
                t, mem = p.cpu_times(), p.memory_info().rss
                self._cpu[p.pid] = ("workers" if worker else "head", t.user + t.system)
                if worker:
                    self._worker_rss[p.pid] = max(mem, self._worker_rss.get(p.pid, 0))
                rss += mem
        self.peak_rss = max(self.peak_rss, rss)
        available = psutil.virtual_memory().available
        self.min_available = min(self.min_available, available)
        if available < self._floor and not self.stopped:
            self.stopped = (f"available memory fell to {available / 2**30:.1f} GiB with Ray's processes at "
                            f"{rss / 2**30:.1f} GiB RSS, a worker at {self.worker_rss() / 2**20:.0f} MiB (median)")
            os.kill(os.getpid(), signal.SIGINT)

    def worker_rss(self, pids: set[int] | None = None) -> float:
        """Median of the largest RSS of the workers (those of ``pids``), in bytes."""
        xs = [v for pid, v in self._worker_rss.items() if pids is None or pid in pids]
        return statistics.median(xs) if xs else math.nan

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.sample()
        self.own_cpu_s = time.thread_time()  # this thread runs in the driver: its CPU is not the driver's

    def cpu(self) -> dict[str, float]:
        """CPU seconds of Ray's head processes and of its workers so far."""
        self.sample()
        out = {"head": 0.0, "workers": 0.0}
        for kind, seconds in self._cpu.values():
            out[kind] += seconds
        return out


@contextlib.contextmanager
def timed_searcher(times: dict[str, list]) -> Iterator[None]:
    """While it lasts, every ``suggest`` and ``on_trial_complete`` of the study's searcher is timed:
    ``times[name]`` gets (trials finished before the call, seconds)."""
    originals = {name: getattr(IspOptunaSearch, name) for name in ("suggest", "on_trial_complete")}

    def timed(name: str, fn: Callable) -> Callable:
        def call(self: Any, *args: Any, **kw: Any) -> Any:
            finished, t0 = len(self._completed_trials), time.perf_counter()
            out = fn(self, *args, **kw)
            if name != "suggest" or isinstance(out, dict):
                times.setdefault(name, []).append((finished, time.perf_counter() - t0))
            return out
        return call

    for name, fn in originals.items():
        setattr(IspOptunaSearch, name, timed(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(IspOptunaSearch, name, fn)


@dataclass
class TrialSpan:
    """One trial on its GPU: wall time at the stand-in's entry and at its last report."""

    trial_id: str
    gpu: str
    start: float
    end: float
    reports: int
    born: float  # when its worker process was created
    pid: int  # that process


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation; NaN for no values."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def gpu_timeline(spans: list[TrialSpan], fit_start: float, concurrent: int) -> dict[str, Any]:
    """The gaps between a trial's end and the next trial's start on the same GPU (the first wave's start-up is
    not a gap); how many GPUs ever ran a trial and the most trials running at once; the share of the ``concurrent``
    GPUs' time busy: from the moment the last GPU to be used got its first trial to the last trial's start (while
    trials were left to start), and over the whole run."""
    by_gpu: dict[str, list[TrialSpan]] = {}
    for s in spans:
        by_gpu.setdefault(s.gpu, []).append(s)
    gaps, firsts, to_process, process_up, same_worker = [], [], [], [], 0
    for runs in by_gpu.values():
        runs.sort(key=lambda s: s.start)
        firsts.append(runs[0].start - fit_start)
        for a, b in itertools.pairwise(runs):
            gaps.append(b.start - a.end)
            same_worker += b.pid == a.pid  # Ray Tune reused the previous trial's worker (actor)
            if b.born > a.end:  # a worker process started for this trial: the gap is Ray's part, then its start-up
                to_process.append(b.born - a.end)
                process_up.append(b.start - b.born)
    out: dict[str, Any] = {
        "gaps": len(gaps), "gap_median_s": percentile(gaps, 0.5), "gap_p95_s": percentile(gaps, 0.95),
        "same_worker": same_worker, "new_processes": len(to_process),
        "to_process_median_s": percentile(to_process, 0.5),
        "process_up_median_s": percentile(process_up, 0.5),
        "gap_mean_s": statistics.fmean(gaps) if gaps else math.nan, "gap_max_s": max(gaps, default=math.nan),
        "first_wave_s": [min(firsts, default=math.nan), max(firsts, default=math.nan)],
        "trial_mean_s": statistics.fmean(s.end - s.start for s in spans) if spans else math.nan,
        "gpus_used": len(by_gpu), "most_at_once": _most_at_once(spans)}
    if spans:
        t0, t1 = fit_start + max(firsts), max(s.start for s in spans)
        out["busy_steady"] = _busy(spans, t0, t1, concurrent) if t1 > t0 else None
        out["busy_run"] = _busy(spans, min(s.start for s in spans), max(s.end for s in spans), concurrent)
    return out


def _most_at_once(spans: list[TrialSpan]) -> int:
    most = running = 0
    for _, step in sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans]):
        running += step
        most = max(most, running)
    return most


def _busy(spans: list[TrialSpan], t0: float, t1: float, gpus: int) -> float:
    covered = sum(max(0.0, min(s.end, t1) - max(s.start, t0)) for s in spans)
    return covered / (gpus * (t1 - t0))


def sampler_times(space: SearchSpace, storage: str, study_name: str, repeats: int = 3) -> dict[int, float]:
    """Seconds per suggestion (``ask`` and the space's ``suggest_*`` calls) of the sampler ``make_sampler`` builds,
    on an in-memory study holding the first n finished trials of the run's journal, for n in
    :data:`SAMPLER_MARKS` (and all of them)."""
    done = [t for t in optuna.load_study(study_name=study_name, storage=make_storage(storage)).get_trials()
            if t.state.is_finished()]
    marks = sorted({m for m in SAMPLER_MARKS if m <= len(done)} | {len(done)})
    out: dict[int, float] = {}
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():  # TPE's multivariate and group options are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for m in marks:
                study = optuna.create_study(sampler=make_sampler(space), directions=[
                    "minimize" if mode == "min" else "maximize" for mode in space.modes])
                study.add_trials(done[:m])
                took = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    trial = study.ask()
                    suggest(trial, space)
                    took.append(time.perf_counter() - t0)
                    study.tell(trial, state=TrialState.FAIL)  # a failed trial is no evidence for TPE
                out[m] = statistics.median(took)
    finally:
        optuna.logging.set_verbosity(level)
    return out


def _by_finished(times: list[tuple[int, float]]) -> dict[str, float]:
    """Median seconds per call, by trials finished before it (0-63, 64-127, 128-255, ...)."""
    bounds = [0, *SAMPLER_MARKS[1:], math.inf]
    out = {}
    for lo, hi in itertools.pairwise(bounds):
        xs = [dt for n, dt in times if lo <= n < hi]
        if xs:
            out[f"{lo}-{hi - 1:g}" if hi < math.inf else f"{lo}+"] = statistics.median(xs)
    return out


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def bench_space(trials: int, concurrent: int, evaluations: int, storage: str) -> SearchSpace:
    """The paper's unpaired space (2 objectives, MOASHA, TPE, its default point first) with the bench's trial
    count, concurrency, ``evaluations`` per trial, one CPU and one GPU a trial, storage in the bench's folder."""
    space = load_space(str(SPACE_FILE))
    return replace(space, name="bench-driver", pretrain=PretrainCfg(), resources=Resources(cpu=1.0, gpu=1.0),
                   storage=StorageCfg(path=storage),
                   base=replace(space.base, overrides={**space.base.overrides, "train.steps": evaluations * 250,
                                                       "train.eval_interval": 250}),
                   search=replace(space.search, num_samples=trials, max_concurrent=concurrent))


def run_bench(trials: int = 512, concurrent: int = 64, trial_seconds: float = 60.0, evaluations: int = 8,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the driver once against stand-in trials on a Ray instance of ``concurrent`` logical GPUs started here
    (and shut down at the end, its folder removed); returns the measurements (JSON-ready)."""
    if ray.is_initialized():
        raise UserError("bench-driver starts its own Ray instance: run it in a process that is not connected to Ray")
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bd", dir="/tmp"))  # short: Ray's socket paths must stay < 108 characters
    try:
        ctx = open_study(bench_space(trials, concurrent, evaluations, str(tmp / "storage")), name="bench-driver")
        write_meta(ctx.exp, ctx.space)
        ws = WorkerSpace(metric_names=ctx.space.metric_names, scheduler=Scheduler(ctx.space.scheduler.metric),
                         params={k: ("categorical", list(p.choices)) if p.type == "categorical" else
                                 (p.type, float(p.low), float(p.high), p.log) for k, p in ctx.space.space.items()},
                         evaluations=ctx.cfg.num_evaluations, trial_seconds=trial_seconds,
                         scratch=str(tmp / "scratch"), curve=scheduler_sim.Config, score=scheduler_sim.score,
                         noise=scheduler_sim.NOISE)
        ray_up_s = _start_ray(concurrent, tmp / "ray")
        log(f"bench-driver: Ray up in {ray_up_s:.1f} s ({concurrent} logical GPUs); {trials} stand-in trials of "
            f"{trial_seconds:g} s, {concurrent} at once; the driver's own output goes to a log")
        try:
            run = _search(ctx, ws, tmp / "driver.log")
        finally:
            ray.shutdown()
        machine = {"cpus": os.cpu_count(), "load_average": load, "memory_gib": psutil.virtual_memory().total / 2**30}
        return {"trials": trials, "concurrent": concurrent, "trial_seconds": trial_seconds,
                "evaluations": ctx.cfg.num_evaluations, "space": ctx.space.source,
                "scheduler": f"{ctx.space.scheduler_type} (grace {ctx.space.scheduler.grace_period}, reduction "
                             f"{ctx.space.scheduler.reduction_factor:g})", "sampler": ctx.space.search.sampler,
                "machine": machine, "ray_up_s": ray_up_s, **run, **_journal(ctx)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _start_ray(concurrent: int, temp_dir: Path) -> float:
    """A local Ray with ``concurrent`` logical GPUs (and CPUs), set up as ``cluster.connect`` sets up a study's;
    returns the seconds it took."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic reporter: the trial table
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    t0 = time.time()
    ray.init(address="local", num_cpus=concurrent, num_gpus=concurrent, include_dashboard=False,
             _temp_dir=str(temp_dir), log_to_driver=True, logging_level=logging.WARNING,
             runtime_env=ray_runtime_env() or None)
    return time.time() - t0


def _search(ctx: StudyContext, ws: WorkerSpace, driver_log: Path) -> dict[str, Any]:
    """``tuner.fit`` on the stand-in, its output in ``driver_log``; the timeline, CPU and memory it measured."""
    times: dict[str, list] = {}
    floor = max(2 * 2**30, psutil.virtual_memory().total // 10)
    grid = None
    with light_workers(ws), timed_searcher(times), Probe(floor) as probe, open(driver_log, "w") as out, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        cpu0, fit_start = resource.getrusage(resource.RUSAGE_SELF), time.time()
        try:
            grid = fit(ctx, trial_fn=stand_in_trial)
        except (Exception, KeyboardInterrupt):
            if not probe.stopped:
                raise
        fit_s = time.time() - fit_start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        ray_cpu = probe.cpu()
    if probe.stopped or grid is None:
        raise UserError(f"bench-driver stopped the search: {probe.stopped}; fewer --concurrent trials fit, or the "
                        "trial workers import more than they should (torch: about 0.6 GiB each)")
    results = [r.metrics for r in grid if r.metrics and "bench/start" in r.metrics]
    spans = [TrialSpan(m.get("trial_id", ""), str(m["bench/gpu"]), m["bench/start"], m["bench/at"],
                       int(m.get("training_iteration", 0)), m["bench/born"], int(m["bench/pid"])) for m in results]
    errors = [str(r.error).splitlines()[0] for r in grid if r.error is not None]
    lines = driver_log.read_text(errors="replace").splitlines()
    driver_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime - probe.own_cpu_s
    return {"fit_s": fit_s, "errors": errors, "reports": sum(s.reports for s in spans),
            "driver_output_lines": len(lines), "driver_output_tail": lines[-15:] if errors else [],
            "workers_with_torch": sum(int(m.get("bench/torch", 0)) for m in results),
            **gpu_timeline(spans, fit_start, ctx.space.search.max_concurrent),
            "suggest_s": _by_finished(times.get("suggest", [])),
            "tell_s": _by_finished(times.get("on_trial_complete", [])),
            "cpu_s": {"driver": driver_cpu, **ray_cpu},
            "memory": {"ray_peak_rss_gib": probe.peak_rss / 2**30, "min_available_gib": probe.min_available / 2**30,
                       "worker_rss_mib": probe.worker_rss({int(m.get("bench/pid", 0)) for m in results}) / 2**20}}


def _journal(ctx: StudyContext) -> dict[str, Any]:
    """Trial states in the Optuna journal, the sampler's time per suggestion, and the sizes of what was written."""
    study = optuna.load_study(study_name=ctx.exp.study_name, storage=make_storage(ctx.exp.optuna_storage))
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    exp_dir = Path(ctx.exp.uri)
    state_files = [f for f in exp_dir.iterdir() if f.is_file() and f.name not in ("optuna.journal", "isp_search.json")]
    times = sampler_times(ctx.space, ctx.exp.optuna_storage, ctx.exp.study_name)
    return {"optuna_states": states, "sampler_s": {str(k): v for k, v in times.items()},
            "sizes": {"optuna_journal": _size(Path(ctx.exp.optuna_storage)),
                      "ray_state": sum(_size(f) for f in state_files),
                      "ray_state_files": {f.name: _size(f) for f in state_files},
                      "experiment_folder": _size(exp_dir)}}
