"""``isp-search demo``: the smoke search end to end on this machine (synthetic data, local Ray, CPU)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

SMOKE_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run search_spaces/smoke.yaml end to end on CPU: search, export, leaderboard + HTML report",
        description="Build the synthetic data set if missing, start a local Ray in this process, run a few tiny "
        "trials of the smoke search space, export the Pareto-optimal ones and write the leaderboard "
        "(results/leaderboard.parquet) and its HTML report (results/leaderboard.html). A few minutes on 2 cores.")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--space", default=str(SMOKE_SPACE), help="search space (default: search_spaces/smoke.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isp_search.commands.search import run_space
    from isp_search.search.space import absolute_path, load_space

    space = load_space(args.space)
    results = absolute_path(args.results)
    space = replace(space, storage=replace(space.storage, path=str(Path(results) / "search")),
                    export=replace(space.export, results=results))
    return run_space(space, name=f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
