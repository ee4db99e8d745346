"""Early stopping compared on synthetic learning curves whose Pareto front is known (``isp-search bench-scheduler``).

Four ways to spend the same budget (the sum of training iterations over all trials): MOASHA
(:mod:`isp_search.search.moasha`), ASHA on the scalar ``psnr - 10 * lpips``, the search's sampler with no early
stopping, and random configurations with no early stopping. The result is the hypervolume of the front of the
completed trials' final values relative to the true front's, and the share of the truly Pareto-optimal
configurations started that the scheduler stopped.

This is a discrete-event simulation, not a Ray Tune run: the schedulers are the objects the search builds
(:class:`~isp_search.search.moasha.MOASHAScheduler`, Ray Tune's ``ASHAScheduler``), called as Ray's TuneController
calls them (``on_trial_add``, ``on_trial_result`` for every report, ``on_trial_complete`` when a trial ends or is
stopped), and the configurations come from the search's Optuna sampler
(:func:`~isp_search.search.searcher.make_sampler`: TPE), told COMPLETE or PRUNED as the searcher tells it;
``concurrent`` trials run at once, each iteration taking the trial's own (seeded) time. Ray's actors and
processes decide nothing about which trial stops, and hundreds of real Ray trials take minutes on 2 cores.

The problem (:class:`Config`): three searched values in [0, 1]. ``trade`` places a configuration along the front
(0: best LPIPS, 1: best PSNR), ``quality`` up to :data:`ON_FRONT` puts it on the front and above that behind it
(q up to 3), ``speed`` sets how slowly it learns. Final values: lpips = 0.08 + 0.16 trade + 0.03 q, psnr =
21 + 5 sqrt(trade) - q. The scalar psnr - 10 lpips grows with ``trade``, so it ranks the low-LPIPS end of the front
below dominated configurations. Curves run from (0.5, 13) at iteration 0 to the final values at ``max_t``, with a
time constant of 0.5 to 8 iterations set by ``speed`` alone: some of the best configurations start slow and end
first, so curves cross. Every evaluation adds seeded noise; the closing report at ``max_t`` is exact.
"""

from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from isp_search.search.moasha import MOASHAScheduler
from isp_search.search.searcher import make_sampler
from isp_search.search.space import Objective, SearchCfg, SearchSpace

METHODS = ("moasha", "asha", "none", "random")
ON_FRONT = 0.05  # quality at or below this: on the true front
REF = (0.40, 17.0)  # the hypervolume's reference point (lpips, psnr): worse than every final value
START = (0.5, 13.0)  # (lpips, psnr) of every configuration before training
NOISE = (0.008, 0.25)  # standard deviation of an evaluation's (lpips, psnr)
OBJECTIVES = (Objective("lpips", "min"), Objective("psnr", "max"))


def score(lpips: float, psnr: float) -> float:
    """The scalar ASHA ranks by."""
    return psnr - 10.0 * lpips


def front_point(trade: float) -> tuple[float, float]:
    """(lpips, psnr) of the true front at ``trade``."""
    return 0.08 + 0.16 * trade, 21.0 + 5.0 * math.sqrt(trade)


@dataclass(frozen=True)
class Config:
    """One synthetic configuration: its three searched values (see the module docstring)."""

    trade: float
    quality: float
    speed: float

    @property
    def behind(self) -> float:
        """How far behind the front (q, 0 on it)."""
        return 3.0 * max(0.0, self.quality - ON_FRONT) / (1.0 - ON_FRONT)

    @property
    def pareto_optimal(self) -> bool:
        return self.behind == 0.0

    @property
    def final(self) -> tuple[float, float]:
        lp, ps = front_point(self.trade)
        return lp + 0.03 * self.behind, ps - self.behind

    def at(self, t: float, max_t: float) -> tuple[float, float]:
        """Noise-free (lpips, psnr) after ``t`` of ``max_t`` iterations: START at 0, :attr:`final` at ``max_t``."""
        tau = 0.5 * 16.0 ** self.speed
        left = (math.exp(-t / tau) - math.exp(-max_t / tau)) / (1.0 - math.exp(-max_t / tau))
        (lp, ps), (lp0, ps0) = self.final, START
        return lp + (lp0 - lp) * left, ps + (ps0 - ps) * left


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float] = REF) -> float:
    """Area dominated by ``points`` (lpips to minimise, psnr to maximise) up to ``ref``."""
    area, best = 0.0, ref[1]
    for lp, ps in sorted(p for p in points if p[0] < ref[0] and p[1] > ref[1]):
        if ps > best:
            area += (ref[0] - lp) * (ps - best)
            best = ps
    return area


def true_hypervolume() -> float:
    """The true front's hypervolume (the front sampled at 4001 points)."""
    return hypervolume([front_point(a) for a in np.linspace(0.0, 1.0, 4001)])


def curve_trainable(config: dict[str, Any]) -> None:
    """A Ray Tune function trainable reporting a :class:`Config`'s curve (``trade``, ``quality``, ``speed``, ``max_t``
    and a noise ``seed`` in ``config``) as the simulation does: noisy evaluations, then the exact closing report."""
    cfg, max_t = Config(config["trade"], config["quality"], config["speed"]), int(config["max_t"])
    rng = np.random.default_rng(int(config.get("seed", 0)))
    for t in range(1, max_t + 1):
        lp, ps = cfg.at(t, max_t)
        if t < max_t:
            lp, ps = lp + rng.normal(0.0, NOISE[0]), ps + rng.normal(0.0, NOISE[1])
        tune.report({"lpips": lp, "psnr": ps, "score": score(lp, ps), "final": int(t == max_t)})


@dataclass
class SimTrial:
    """What the schedulers read of a Ray trial: its id (and here the simulation's own state)."""

    trial_id: str
    config: Config
    optuna_trial: Any
    step_s: float
    t: int = 0
    outcome: str = "running"  # complete | stopped (by the scheduler) | cut (the budget ran out)


@dataclass
class MethodResult:
    """One method's run: trials by outcome, budget, relative hypervolume, Pareto-optimal trials started/stopped."""

    method: str
    started: int
    completed: int
    stopped: int
    cut: int
    budget_used: int
    hv_relative: float
    optimal_started: int
    optimal_stopped: int

    @property
    def optimal_pruned_share(self) -> float:
        return self.optimal_stopped / self.optimal_started if self.optimal_started else 0.0


def make_scheduler(method: str, max_t: int, grace_period: int, reduction_factor: float) -> TrialScheduler | None:
    if method == "moasha":
        return MOASHAScheduler([o.metric for o in OBJECTIVES], [o.direction for o in OBJECTIVES], max_t=max_t,
                               grace_period=grace_period, reduction_factor=reduction_factor)
    if method == "asha":
        return ASHAScheduler(time_attr="training_iteration", metric="score", mode="max", max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor)
    return None


def simulate(method: str, *, trials: int, budget: int, concurrent: int, max_t: int, grace_period: int,
             reduction_factor: float, seed: int) -> MethodResult:
    """One method: start trials while the budget lasts (without early stopping, only trials it still covers to
    ``max_t``); trials still running when it runs out are cut (not complete). ``trials`` is the search's
    ``num_samples`` as the sampler sees it. Random search draws from its own seeded stream."""
    sampler = "random" if method == "random" else "tpe"
    space = SearchSpace(objectives=OBJECTIVES, search=SearchCfg(sampler=sampler, num_samples=trials,
                                                                seed=seed + (1000 if method == "random" else 0)))
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=make_sampler(space))
    scheduler = make_scheduler(method, max_t, grace_period, reduction_factor)
    rng = np.random.default_rng([seed, METHODS.index(method)])
    events: list[tuple[float, int, SimTrial]] = []
    done: list[SimTrial] = []
    used, now = 0, 0.0

    def committed() -> int:  # iterations the running trials will still take without early stopping
        return sum(max_t - tr.t for _, _, tr in events)

    def can_start() -> bool:
        if len(events) >= concurrent or used >= budget:
            return False
        return scheduler is not None or budget - used - committed() >= max_t

    def finish(tr: SimTrial, outcome: str, result: dict) -> None:
        tr.outcome = outcome
        if outcome == "complete":
            study.tell(tr.optuna_trial, [result["lpips"], result["psnr"]])
        else:
            study.tell(tr.optuna_trial, state=TrialState.PRUNED)
        if scheduler is not None and outcome != "cut":
            scheduler.on_trial_complete(None, tr, result)  # Ray does so for a trial it stops or that ends
        done.append(tr)

    while True:
        while can_start():
            ot = study.ask()
            cfg = Config(ot.suggest_float("trade", 0, 1), ot.suggest_float("quality", 0, 1),
                         ot.suggest_float("speed", 0, 1))
            tr = SimTrial(str(ot.number), cfg, ot, step_s=float(np.exp(rng.normal(0.0, 0.3))))
            if scheduler is not None:
                scheduler.on_trial_add(None, tr)
            heapq.heappush(events, (now + tr.step_s, ot.number, tr))
        if not events:
            break
        now, _, tr = heapq.heappop(events)
        tr.t += 1
        used += 1
        lp, ps = tr.config.at(tr.t, max_t)
        if tr.t < max_t:  # an evaluation: noisy; the closing report carries the exact final values
            lp, ps = lp + rng.normal(0.0, NOISE[0]), ps + rng.normal(0.0, NOISE[1])
        result = {"training_iteration": tr.t, "lpips": lp, "psnr": ps, "score": score(lp, ps)}
        decision = scheduler.on_trial_result(None, tr, result) if scheduler else TrialScheduler.CONTINUE
        if tr.t >= max_t:
            finish(tr, "complete", result)
        elif decision == TrialScheduler.STOP:
            finish(tr, "stopped", result)
        else:
            heapq.heappush(events, (now + tr.step_s, tr.optuna_trial.number, tr))
        if used >= budget:
            for _, _, left in events:
                finish(left, "cut", {})
            events.clear()
    complete = [tr for tr in done if tr.outcome == "complete"]
    optimal = [tr for tr in done if tr.config.pareto_optimal]
    return MethodResult(
        method=method, started=len(done), completed=len(complete),
        stopped=sum(tr.outcome == "stopped" for tr in done), cut=sum(tr.outcome == "cut" for tr in done),
        budget_used=used, hv_relative=float(hypervolume([tr.config.final for tr in complete]) / true_hypervolume()),
        optimal_started=len(optimal), optimal_stopped=sum(tr.outcome == "stopped" for tr in optimal))


def default_budget(trials: int, max_t: int, reduction_factor: float) -> int:
    """The budget of ``trials / reduction_factor`` trials run to ``max_t``: without early stopping that many run,
    with it about ``trials`` start."""
    return max(max_t, round(trials * max_t / reduction_factor))


def compare(*, trials: int = 200, budget: int | None = None, concurrent: int = 4, max_t: int = 27,
            grace_period: int = 1, reduction_factor: float = 3.0, seed: int = 0,
            methods: tuple[str, ...] = METHODS) -> tuple[int, list[MethodResult]]:
    """(budget, one result per method), every method at that budget."""
    budget = budget or default_budget(trials, max_t, reduction_factor)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # TPE's multivariate and group options are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return budget, [simulate(m, trials=trials, budget=budget, concurrent=concurrent, max_t=max_t,
                                 grace_period=grace_period, reduction_factor=reduction_factor, seed=seed)
                        for m in methods]
