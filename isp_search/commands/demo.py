"""``isp-search demo``: the smoke search end to end on this machine (synthetic data, local Ray, CPU)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from isp_search.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SPACE = ROOT / "search_spaces" / "smoke.yaml"
PRETRAIN_CONFIG = ROOT / "configs" / "synth_pretrain.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run search_spaces/smoke.yaml end to end on CPU: search, export, leaderboard + HTML report",
        description="Build the synthetic data set if missing, start a local Ray in this process, run a few tiny "
        "trials of the smoke search space, export the Pareto-optimal ones and write the leaderboard "
        "(results/leaderboard.parquet) and its HTML report (results/leaderboard.html). As in the paper, the "
        "unpaired trials start from a pretrained (demosaicing) generator: a short configs/synth_pretrain.yaml run "
        "into RESULTS/demo-pretrain-<config hash>, reused when it is there. A few minutes on 2 cores.")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--space", default=str(SMOKE_SPACE), help="search space (default: search_spaces/smoke.yaml)")
    p.add_argument("--pretrain-steps", type=int, default=300,
                   help="steps of the pretrain run the trials start from (default: 300; 0: trials start from scratch)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isp_search.commands.search import run_space
    from isp_search.search.space import absolute_path, load_space

    space = load_space(args.space)
    results = absolute_path(args.results)
    space = replace(space, storage=replace(space.storage, path=str(Path(results) / "search")),
                    export=replace(space.export, results=results))
    if args.pretrain_steps < 0:
        raise UserError(f"--pretrain-steps must be >= 0, got {args.pretrain_steps}")
    if args.pretrain_steps:
        init = pretrain(Path(results), args.pretrain_steps)
        space = replace(space, base=replace(space.base, overrides={**space.base.overrides, "model.init_from": init}))
    return run_space(space, name=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")


def pretrain(results: Path, steps: int, overrides: dict | None = None) -> str:
    """A finished ``steps``-step synth_pretrain run under ``results``, in a folder named by its resolved config
    (``demo-pretrain-<hash>``): reused when it completed, resumed when it was cut off, trained otherwise."""
    from isp_search.search.pretrain import config_key, run_once
    from isp_search.train import apply_overrides, load_train_config

    over = {"train.steps": steps, "train.eval_interval": steps, "train.log_interval": max(1, steps // 5)}
    cfg = apply_overrides(load_train_config(PRETRAIN_CONFIG), {**over, **(overrides or {})})
    run_dir = results / f"demo-pretrain-{config_key(cfg)}"  # the search's pretrain stage keys its runs alike
    done = run_once(cfg, run_dir)
    if done.get("reused"):
        print(f"pretrained generator: {run_dir} (reused)")
        return str(run_dir)
    print(f"pretrained generator: {run_dir} ({steps} steps, val psnr {done['val'].get('psnr', float('nan')):.2f} dB)")
    return str(run_dir)
