"""``isp-search search SPACE.yaml``: run (or resume) a distributed hyper-parameter search with Ray Tune + Optuna."""

from __future__ import annotations

import argparse
from dataclasses import replace

from isp_search.configio import parse_override
from isp_search.errors import UserError
from isp_search.search.space import SearchSpace
from isp_search.search.space_file import absolute_path, load_space
from isp_search.search.study import run_study


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search", help="run or resume a multi-objective hyper-parameter search (Ray Tune + Optuna) from a space YAML",
        description="Run a whole study, each stage skipped when its result is there: preflight checks on the driver, "
        "prepare (every reference cache, built once over the cluster's CPUs), a check on every node that can take a "
        "trial, pretrain (the run named by the space's pretrain: section, once, reused by every trial), then train "
        "one model per trial on a local or remote Ray cluster, searched by Optuna on the objectives of SPACE.yaml "
        "(default LPIPS down, PSNR up) with MOASHA early stopping; then re-train the best and the default point with "
        "more seeds, measure the baselines (the start and the default point), export, gate and time them and the "
        "Pareto-optimal trials and add them to the leaderboard. Schema: search_spaces/README.md.")
    p.add_argument("space", metavar="SPACE.yaml", help="search-space file (see search_spaces/)")
    p.add_argument("--name", default=None,
                   help="experiment name (default: <space name>-<date-time>; with --resume: the newest one)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted search (finished trials kept, running ones from their checkpoint)")
    p.add_argument("--storage", default=None,
                   help="experiment storage: local folder, NFS folder mounted on every node, or s3://bucket/prefix "
                   "(overrides storage.path)")
    p.add_argument("--results", default=None,
                   help="folder for the leaderboard, its HTML report, exports and plots (overrides export.results)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. ray://head:10001 or auto); default: $RAY_ADDRESS under "
                   "`ray job submit`, else a local Ray started in this process")
    p.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    p.add_argument("--sampler", choices=("tpe", "gp", "nsga2", "random"), default=None,
                   help="override search.sampler (e.g. random, to measure what the space's sampler buys)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value of every trial and of the pretrain run, e.g. "
                   "--set data.root=/mnt/isp-search/data/mai2022 (repeatable; applied after base.overrides)")
    p.add_argument("--skip-bad-nodes", action="store_true",
                   help="run on the nodes that pass the node check (data, weights, storage, caches seen from each "
                   "node) instead of refusing when one fails it")
    p.add_argument("--smoke-test", action="store_true",
                   help="the same space on the tiny CPU config (configs/smoke_unpaired.yaml), 2 trials, seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.storage:
        space = replace(space, storage=replace(space.storage, path=absolute_path(args.storage)))
    if args.results:
        space = replace(space, export=replace(space.export, results=absolute_path(args.results)))
    if args.overrides:
        space = with_overrides(space, args.overrides)
    if args.num_samples is not None:
        if args.num_samples <= 0:
            raise UserError(f"--num-samples {args.num_samples}: expected an int > 0")
        space = replace(space, search=replace(space.search, num_samples=args.num_samples))
    if args.sampler is not None:
        space = replace(space, search=replace(space.search, sampler=args.sampler))
    summary = run_study(space, name=args.name, resume=args.resume, address=args.address, smoke=args.smoke_test,
                        skip_bad_nodes=args.skip_bad_nodes)
    return 0 if summary.pareto else 1  # the Pareto front is empty only when no trial completed


def with_overrides(space: SearchSpace, texts: list[str]) -> SearchSpace:
    """``--set KEY=VALUE`` on the trials' base config and on the pretrain config (relative paths: to the cwd)."""
    over = {}
    for text in texts:
        key, value = parse_override(text)
        if isinstance(value, str) and key.endswith((".root", ".splits", ".init_from")):
            value = absolute_path(value)  # a path typed on the command line means one from here
        over[key] = value
    space = replace(space, base=replace(space.base, overrides={**space.base.overrides, **over}),
                    command_line={**space.command_line, **over})
    if space.pretrain.config:
        pre = {k: v for k, v in over.items() if k != "model.init_from"}  # the pretrain run starts where it says
        space = replace(space, pretrain=replace(space.pretrain, overrides={**space.pretrain.overrides, **pre}))
    return space
