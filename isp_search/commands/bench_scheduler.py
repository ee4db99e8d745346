"""``isp-search bench-scheduler [--trials N] [--seed S] [--json]``: MOASHA, ASHA on a scalar, no early stopping and
random search at the same budget, on simulated learning curves whose Pareto front is known."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from isp_search.diagnostics.scheduler_sim import NOISE, REF, compare, true_hypervolume
from isp_search.errors import UserError

HELP = "compare early stopping (MOASHA, ASHA, none, random search) at one budget on curves with a known front"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-scheduler", help=HELP,
        description="Simulates a search on synthetic learning curves of two objectives (LPIPS to minimise, PSNR to "
        "maximise) whose final Pareto front is known, and spends the same budget (sum of training iterations) four "
        "ways: MOASHA, ASHA on psnr - 10*lpips, the search's TPE sampler without early stopping, and random "
        "configurations without early stopping. The schedulers are the real objects, driven through the calls Ray "
        "Tune makes (a discrete-event simulation, no Ray cluster). Prints, per method, the budget used, the "
        "hypervolume of the completed trials' front relative to the true front's, and how many of the truly "
        "Pareto-optimal configurations it started the scheduler stopped.")
    p.add_argument("--trials", type=int, default=200,
                   help="sets the budget: that of TRIALS / reduction factor trials run to max_t (default: 200; "
                   "the schedulers then start somewhat fewer than TRIALS trials)")
    p.add_argument("--budget", type=int, default=None, help="the budget in iterations instead (overrides --trials)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler, the curves' noise and step times")
    p.add_argument("--concurrent", type=int, default=4, help="trials at once (default: 4)")
    p.add_argument("--max-t", type=int, default=27, help="iterations of a full trial, its closing report included")
    p.add_argument("--grace-period", type=int, default=1, help="first rung (default: 1)")
    p.add_argument("--reduction-factor", type=float, default=3.0, help="rung spacing and keep fraction (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag, value, ok, valid in (
            ("--trials", args.trials, args.trials >= 1, ">= 1"),
            ("--concurrent", args.concurrent, args.concurrent >= 1, ">= 1"),
            ("--max-t", args.max_t, args.max_t >= 2, ">= 2"),
            ("--grace-period", args.grace_period, args.grace_period >= 1, ">= 1"),
            ("--reduction-factor", args.reduction_factor, args.reduction_factor > 1, "> 1"),
            ("--budget", args.budget, args.budget is None or args.budget >= args.max_t, ">= --max-t")):
        if not ok:
            raise UserError(f"{flag} must be {valid}, got {value:g}")
    budget, results = compare(trials=args.trials, budget=args.budget, concurrent=args.concurrent,
                              max_t=args.max_t, grace_period=args.grace_period,
                              reduction_factor=args.reduction_factor, seed=args.seed)
    if args.json:
        print(json.dumps({"budget": budget, "seed": args.seed, "true_hypervolume": true_hypervolume(),
                          "methods": [{**asdict(r), "optimal_pruned_share": r.optimal_pruned_share}
                                      for r in results]}))
        return 0
    print(f"simulated search, seed {args.seed}: budget {budget} iterations per method, max_t {args.max_t} "
          f"(closing report included), grace period {args.grace_period}, reduction factor "
          f"{args.reduction_factor:g}, {args.concurrent} trials at once")
    print(f"objectives lpips (min) and psnr (max), evaluation noise sd {NOISE[0]} / {NOISE[1]} dB; ASHA ranks by "
          f"psnr - 10*lpips; true front hypervolume {true_hypervolume():.4f} (reference lpips {REF[0]}, "
          f"psnr {REF[1]} dB)")
    print(f"{'method':8s} {'trials':>6s} {'complete':>8s} {'stopped':>7s} {'cut':>4s} {'budget used':>11s} "
          f"{'HV / true HV':>12s}  Pareto-optimal stopped")
    for r in results:
        share = f"{r.optimal_stopped}/{r.optimal_started} ({100 * r.optimal_pruned_share:.0f}%)"
        print(f"{r.method:8s} {r.started:6d} {r.completed:8d} {r.stopped:7d} {r.cut:4d} {r.budget_used:11d} "
              f"{r.hv_relative:12.3f}  {share}")
    print("stopped: by the scheduler; cut: still running when the budget ran out; HV of the completed trials' "
          "final values")
    return 0
