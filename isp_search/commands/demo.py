"""``isp-search demo``: the demo study end to end on this machine (synthetic data, local Ray, CPU)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from isp_search.search.space_file import absolute_path, load_space
from isp_search.search.study import run_study

ROOT = Path(__file__).resolve().parents[2]
DEMO_SPACE = ROOT / "search_spaces" / "demo.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run search_spaces/demo.yaml end to end on CPU: pretrain, search, baselines, export, report",
        description="Build the synthetic data set if missing, start a local Ray in this process and run the demo "
        "study (search_spaces/demo.yaml): a short demosaicing pretrain run (reused when it is there), unpaired GAN "
        "trials from it with the paper's schedule as the default point, the start and the default measured as "
        "baselines, the best exported and timed, and the leaderboard (RESULTS/leaderboard.parquet) with its HTML "
        "report (RESULTS/leaderboard.html). It ends with the baselines, each Pareto trial's difference to them "
        "and whether the search beat them. About 6 minutes on 2 idle CPU cores.")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--space", default=str(DEMO_SPACE), help="search space (default: search_spaces/demo.yaml)")
    p.add_argument("--seed", type=int, default=None, help="search.seed (default: the space's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    results = absolute_path(args.results)
    space = replace(space, storage=replace(space.storage, path=str(Path(results) / "search")),
                    export=replace(space.export, results=results))
    if args.seed is not None:
        space = replace(space, search=replace(space.search, seed=args.seed))
    summary = run_study(space, name=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    return 0 if summary.pareto else 1
