"""``isp-search bench-driver [--trials N] [--concurrent G] [--trial-seconds S] [--json]``: the search's driver at
scale, against stand-in trials on a local Ray instance with G logical GPUs (docs/benchmarks.md, "Driver at scale")."""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

from isp_search.diagnostics.bench_driver import run_bench
from isp_search.errors import UserError

HELP = "run the search's driver (Optuna, MOASHA, Ray Tune) on stand-in trials: gaps, sampler time, CPU, journal"
DEFAULT_TRIAL_S = 60.0
_STAMP = re.compile(r"-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")  # the session time in Ray's state file names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-driver", help=HELP,
        description="Runs the real search driver (the study's Optuna searcher and journal, MOASHA, Ray Tune's "
        "Tuner, the trial wrapper, callbacks and trial table) on a local Ray instance it starts with one logical "
        "GPU per concurrent trial, against stand-in trials that sleep and report simulated learning curves (no "
        "training, no GPU). Prints the time a GPU waits between one trial's end and the next one's start, the "
        "sampler's time per suggestion as trials accumulate, the driver's CPU per trial, the journal and Ray state "
        "sizes, and the GPU-busy fraction measured and projected for 2 h and 10 min trials.")
    p.add_argument("--trials", type=int, default=512, help="trials in all (default: 512)")
    p.add_argument("--concurrent", type=int, default=64, help="trials at once = logical GPUs (default: 64)")
    p.add_argument("--trial-seconds", type=float, default=DEFAULT_TRIAL_S,
                   help=f"length of a stand-in trial run to the end (default: {DEFAULT_TRIAL_S:g}; MOASHA stops "
                   "most trials earlier)")
    p.add_argument("--evaluations", type=int, default=8,
                   help="evaluations (reports with a checkpoint) per full trial, before the closing report "
                   "(default: 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag, value, ok, valid in (("--trials", args.trials, args.trials >= 1, ">= 1"),
                                   ("--concurrent", args.concurrent, args.concurrent >= 1, ">= 1"),
                                   ("--trial-seconds", args.trial_seconds, args.trial_seconds > 0, "> 0"),
                                   ("--evaluations", args.evaluations, args.evaluations >= 1, ">= 1")):
        if not ok:
            raise UserError(f"{flag} must be {valid}, got {value:g}")
    result = run_bench(trials=args.trials, concurrent=args.concurrent, trial_seconds=args.trial_seconds,
                       evaluations=args.evaluations, log=(lambda _: None) if args.json else print)
    print(json.dumps(result) if args.json else "\n".join(format_report(result)))
    return 1 if result["errors"] else 0


def _ms(s: float) -> str:
    if s is None or math.isnan(s):
        return "n/a"
    return f"{1000 * s:.1f} ms" if s < 0.01 else f"{1000 * s:.0f} ms" if s < 1 else f"{s:.2f} s"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f} %" if x > 0.99 else f"{100 * x:.1f} %"


def format_report(r: dict[str, Any]) -> list[str]:
    """The lines ``isp-search bench-driver`` prints for a result of :func:`run_bench`, each within 120 columns."""
    m, cpu, n, mem, sizes = r["machine"], r["cpu_s"], r["trials"], r["memory"], r["sizes"]
    states = ", ".join(f"{v} {k}" for k, v in sorted(r["optuna_states"].items()))
    final = sum(v for k, v in r["optuna_states"].items() if k in ("COMPLETE", "PRUNED", "FAIL"))
    gap = r["gap_mean_s"]
    projected = ", ".join(f"{'n/a' if math.isnan(gap) else _pct(t / (t + gap))} with {label} trials"
                          for t, label in ((7200.0, "2 h"), (600.0, "10 min")))
    state_files = ", ".join(f"{_STAMP.sub('', k)} {_mib(v)}" for k, v in sorted(sizes["ray_state_files"].items()) if v)
    lines: list[str] = []
    add = lines.append
    add(f"driver at scale: {n} trials, {r['concurrent']} at once on {r['concurrent']} logical GPUs (1 a trial); "
        f"stand-in trials of {r['trial_seconds']:g} s")
    add(f"  ({r['evaluations']} evaluations + the closing report when not stopped); {r['scheduler']}; "
        f"sampler {r['sampler']}")
    add(f"machine: {m['cpus']} CPUs, {m['memory_gib']:.0f} GiB, load average {m['load_average']:.2f} at start; "
        f"Ray up in {r['ray_up_s']:.1f} s; the search ran {r['fit_s']:.0f} s")
    add(f"memory: Ray's processes at most {mem['ray_peak_rss_gib']:.1f} GiB RSS together, a trial's worker "
        f"{mem['worker_rss_mib']:.0f} MiB (median);")
    add(f"  available memory at least {mem['min_available_gib']:.1f} GiB")
    if r["workers_with_torch"]:
        add(f"  {r['workers_with_torch']} trial(s) ran in a worker that had imported torch: a worker unpickles the "
            "trainable, its arguments")
        add("  and its resources function; one of them imports torch (about 1.2 GiB RSS a worker, 215 MiB without)")
    add(f"optuna journal: {final} of {n} trials final ({states}); {r['reports']} reports; driver output "
        f"{r['driver_output_lines']} lines")
    add(f"gap, a trial's end to the next start on its GPU ({r['gaps']}): median {_ms(r['gap_median_s'])}, "
        f"p95 {_ms(r['gap_p95_s'])}, mean {_ms(gap)}, max {_ms(r['gap_max_s'])}")
    if r["same_worker"]:
        add(f"  {r['same_worker']} of them in the worker the previous trial on that GPU ran in (reused)")
    if r["new_processes"]:
        add(f"  a new worker process for {r['new_processes']} of them: median {_ms(r['to_process_median_s'])} from "
            f"the end to its creation, {_ms(r['process_up_median_s'])} from there to the trial")
    add(f"  first wave (not a gap): started {r['first_wave_s'][0]:.1f}-{r['first_wave_s'][1]:.1f} s after the "
        "search began")
    add(f"GPUs that ran a trial: {r['gpus_used']} of {r['concurrent']}; most trials running at once: "
        f"{r['most_at_once']}")
    add(f"GPU busy, measured on all {r['concurrent']} (trials of {r['trial_mean_s']:.1f} s on average): "
        f"{_pct(r.get('busy_steady'))} from the last first-wave start")
    add(f"  to the last start, {_pct(r.get('busy_run'))} over the whole run")
    add(f"GPU busy, projected as T / (T + mean gap), every GPU in use: {projected}")
    add("sampler, per suggestion (make_sampler's, on the run's first n finished trials):")
    add("  " + ", ".join(f"n={k} {_ms(v)}" for k, v in r["sampler_s"].items()))
    add("searcher in the driver, median by trials finished: suggest "
        + ", ".join(f"{k} {_ms(v)}" for k, v in r["suggest_s"].items()))
    add("  on_trial_complete " + ", ".join(f"{k} {_ms(v)}" for k, v in r["tell_s"].items()))
    add(f"CPU: driver {cpu['driver']:.0f} s ({cpu['driver'] / n:.2f} s a trial, "
        f"{_ms(cpu['driver'] / max(1, r['reports']))} a report); Ray head {cpu['head']:.0f} s "
        f"({cpu['head'] / n:.2f} s a trial);")
    add(f"  Ray workers {cpu['workers']:.0f} s ({cpu['workers'] / n:.2f} s a trial)")
    add(f"sizes: optuna journal {_mib(sizes['optuna_journal'])}; Ray experiment state {_mib(sizes['ray_state'])}; "
        f"experiment folder {_mib(sizes['experiment_folder'])}")
    add(f"  {state_files}")
    if r["errors"]:
        lines += [f"{len(r['errors'])} trial(s) failed, the first: {r['errors'][0]}", "driver output, last lines:",
                  *r["driver_output_tail"]]
    return lines
