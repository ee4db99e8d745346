"""``isp-search bench-train CONFIG [--steps N] [--against-naive] [--compare-cache] [--sizes LIST] [--batch-size B]
[--json]``: time split, FLOPs and frozen backward passes per step, beside the textbook DLA and with/without the
real-feature cache; with ``--sizes``, one table row per square image size."""

from __future__ import annotations

import argparse
import json

from isp_search.diagnostics.bench_train import bench_sizes, bench_train, parse_sizes
from isp_search.errors import UserError
from isp_search.train import load_train_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-train", help="profile a training step: time split, FLOPs vs the floor and the textbook DLA",
        description="Runs a few training steps of CONFIG and reports the per-step time split (data wait, generator, "
        "frozen forward, backward, optimizer, each D group at its real ratio 1/d_*_every), FLOPs per step (torch's "
        "FLOP counter plus CPU attention), backward passes through each frozen network per step, and the ratio of "
        "FLOPs to the floor (forward of each frozen network on real and fake + one backward through the fake "
        "branch). Use --set backbone_weights=random where no pretrained files are installed.")
    p.add_argument("config", metavar="CONFIG", help="training YAML")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step (default: 5)")
    p.add_argument("--against-naive", action="store_true",
                   help="also time the textbook DLA in the same run (per term a backward through its frozen "
                   "network to the generator parameters, then one of the weighted total); prints naive_ratio")
    p.add_argument("--compare-cache", action="store_true",
                   help="time ours without and with features.cache_real (a temporary cache, filled first)")
    p.add_argument("--sizes", metavar="LIST",
                   help="comma list of square sizes (multiples of 16, e.g. 64,128,256,448): per size, on whole "
                   "synthetic images of the config's format, ours without and with features.cache_real and the "
                   "textbook DLA, interleaved, median ms and GFLOP per step; one table")
    p.add_argument("--batch-size", type=int, metavar="B", help="train.batch_size for this run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _print_variant(name: str, v: dict) -> None:
    print(f"{name}: {v['step_ms']:.1f} ms/step ({v['step_cpu_ms']:.1f} CPU ms), {v['flops_per_step'] / 1e9:.3f} "
          "GFLOP/step, "
          f"frozen backward passes {v['frozen_backward_passes']:g} {v['frozen_backward_passes_by_branch']}")
    for k, ms in v["time_ms"].items():
        print(f"  {k:15s} {ms:9.1f} ms")


def format_sizes_table(rows: list[dict]) -> str:
    """The ``--sizes`` rows as one aligned table (ms: median per step, compute only; GFLOP per step)."""
    head = (f"{'size':>5} {'vit':>4} {'ours ms':>9} {'GFLOP':>8} {'cache ms':>9} {'GFLOP':>8} {'naive ms':>9} "
            f"{'GFLOP':>8} {'floor':>8} {'cache/floor':>11} {'cache/ours ms':>13} {'cache/ours FLOPs':>16}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['size']:>5} {r['vit_img_size']:>4} {r['ours_ms']:>9.0f} {r['ours_gflop']:>8.2f} "
                     f"{r['cache_ms']:>9.0f} {r['cache_gflop']:>8.2f} {r['naive_ms']:>9.0f} {r['naive_gflop']:>8.2f} "
                     f"{r['floor_gflop']:>8.2f} {r['cache_to_floor']:>11.3f} {r['cache_ms_ratio']:>13.3f} "
                     f"{r['cache_flops_ratio']:>16.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    sizes = parse_sizes(args.sizes) if args.sizes is not None else None
    batch = [f"train.batch_size={args.batch_size}"] if args.batch_size is not None else []
    cfg = load_train_config(args.config, [*args.overrides, *batch])
    if sizes:
        rows = bench_sizes(cfg, sizes, args.steps)
        if args.json:
            print(json.dumps(rows))
            return 0
        r = rows[0]
        print(f"{cfg.model.arch} {cfg.mode} on {r['device']}, batch {r['batch_size']}, whole synthetic images, "
              f"{args.steps} interleaved steps per size (median, data wait left out), D steps counted at 1/d_*_every")
        print(format_sizes_table(rows))
        return 0
    res = bench_train(cfg, args.steps, args.against_naive, args.compare_cache)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['arch']} {res['config_mode']} on {res['device']}, batch {res['batch_size']}, D every "
          f"{res['d_every']} (counted at that ratio), cache_real {res['cache_real']}")
    _print_variant("ours", res)
    print(f"  floor {res['floor_flops_per_step'] / 1e9:.3f} GFLOP, ratio to floor {res['flops_ratio_to_floor']:.3f}")
    if "cache_real_variant" in res:
        c = res["cache_real_variant"]
        _print_variant("ours, features.cache_real", c)
        print(f"  cache {c['cache_bytes'] / 2**20:.1f} MiB, filled in {c['cache_fill_s']:.1f} s; "
              f"ms x{res['step_ms'] / c['step_ms']:.2f}, FLOPs x{res['flops_per_step'] / c['flops_per_step']:.2f} "
              "fewer than without")
    if "naive" in res:
        _print_variant("naive (textbook DLA)", res["naive"])
        print(f"naive_ratio {res['naive_ratio']:.3f} (ms; CPU ms {res['naive_cpu_ratio']:.3f}), FLOPs ratio "
              f"{res['naive_flops_ratio']:.3f}; frozen "
              f"backward passes naive {res['naive']['frozen_backward_passes']:g} (terms {res['n_terms_with_branch']}"
              f" + branches {res['n_branches']}), ours {res['frozen_backward_passes']:g}")
    return 0
