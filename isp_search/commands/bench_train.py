"""``isp-search bench-train CONFIG [--steps N] [--json]``: time split, FLOPs and frozen backward passes per step."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-train", help="profile a training step: time split, FLOPs vs the unavoidable floor, frozen backwards",
        description="Runs a few training steps of CONFIG and reports the per-step time split (data wait, generator, "
        "frozen forward, backward, D steps, optimizer), FLOPs per step (torch's FLOP counter), backward passes "
        "through each frozen network per step, and the ratio of FLOPs to the floor (forward of each frozen network "
        "on real and fake + one backward through the fake branch).")
    p.add_argument("config", metavar="CONFIG", help="training YAML")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step (default: 5)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isp_search.errors import UserError
    from isp_search.train import load_train_config
    from isp_search.train.bench import bench_train

    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    res = bench_train(load_train_config(args.config, args.overrides), args.steps)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['arch']} {res['config_mode']} on {res['device']}, batch {res['batch_size']}: "
          f"{res['step_ms']:.1f} ms/step")
    for k, v in res["time_ms"].items():
        print(f"  {k:15s} {v:9.1f} ms")
    print(f"  FLOPs/step {res['flops_per_step'] / 1e9:.3f} G, floor {res['floor_flops_per_step'] / 1e9:.3f} G, "
          f"ratio {res['flops_ratio_to_floor']:.3f}")
    print(f"  frozen backward passes per step: {res['frozen_backward_passes_by_branch']}")
    return 0
