"""``isp-search prepare SPACE.yaml | CONFIG.yaml``: build every reference cache a search (or a run) will read, then
every real-feature cache (the frozen networks' features of the real images, ``features.cache_real``) its trials
or the run can read, as the study's prepare stage does."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray

from isp_search.configio import load_yaml
from isp_search.errors import UserError
from isp_search.search import prepare as P
from isp_search.search.context import base_train_config
from isp_search.search.prepare import space_demosaicers
from isp_search.search.prepare_real import build as build_real_caches
from isp_search.search.pretrain import pretrain_config
from isp_search.search.space import SearchSpace
from isp_search.search.space_file import load_space
from isp_search.train.config import TrainConfig, load_train_config
from isp_search.train.real_cache_build import fill_real_cache

REAL_ENV = "ISP_SEARCH_REAL_CACHE"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare", help="build every reference cache a search space or training config needs (once, in parallel)",
        description="List the reference stores a search space's trials and pretrain run can ask for (each "
        "searched demosaicer x each split) or a training config needs, and build the missing ones into "
        "$ISP_SEARCH_CACHE: with local processes, or as Ray tasks over a cluster with --address. "
        "`isp-search search` runs this stage itself; this command runs it alone (e.g. on a CPU box first).")
    p.add_argument("spec", metavar="SPACE_OR_CONFIG.yaml", help="a search space (search_spaces/) or training config")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: every CPU)")
    p.add_argument("--address", default=None, help="build as Ray tasks on this cluster (e.g. auto)")
    p.add_argument("--cache", default=None, help="cache folder (default: $ISP_SEARCH_CACHE or ~/.cache/isp-search)")
    p.add_argument("--bench", action="store_true",
                   help="benchmark instead: build each demosaicer's stores into a scratch folder with 1 and with "
                   "N workers and print images/s (nothing is added to the cache)")
    p.add_argument("--pack", action="store_true",
                   help="also pack every split's decoded images into memory-mapped arrays (as data.packed: true "
                   "does; training then reads them with data.packed: auto)")
    p.add_argument("--no-real-cache", action="store_true",
                   help="only the reference stores: skip the real-feature caches (features.cache_real)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def configs_of(spec: str) -> tuple[list, list[str], SearchSpace | None]:
    """(training configs, searched demosaicers, the space or None) of a search space or a training config file;
    the last config is the one the trials (or the run) train with."""
    data, _ = load_yaml(spec)
    if isinstance(data, dict) and "space" in data and "base" in data:
        space = load_space(spec)
        configs = [base_train_config(space)]
        pre = pretrain_config(space)
        return ([pre] if pre is not None else []) + configs, space_demosaicers(space), space
    return [load_train_config(spec)], [], None


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers <= 0:
        raise UserError(f"--workers {args.workers}: expected an int > 0")
    configs, demosaicers, space = configs_of(args.spec)
    if args.pack:  # pack() packs the configs that ask for it
        configs = [replace(c, data=replace(c.data, packed=True)) for c in configs]
    jobs = P.plan(configs, demosaicers)
    if args.bench:
        return bench(jobs, args)
    use_ray = args.address is not None
    if use_ray:
        ray.init(address=args.address, log_to_driver=True)
    t0 = time.time()
    P.prepare(jobs, use_ray=use_ray, workers=args.workers, cache_dir=args.cache, quiet=args.json)
    P.pack(configs)
    if not args.json:
        for j in jobs:
            print(f"{j.split:5s} {j.demosaicer:16s} {len(j.paths):6d} images  {j.key}  "
                  + (f"built in {j.seconds:.1f} s" if j.built else "cached"))
    real = [] if args.no_real_cache else real_caches(configs[-1], space, use_ray, args.cache, quiet=args.json)
    if args.json:
        print(json.dumps({"stores": [j.row() for j in jobs], "real_caches": real,
                          "seconds": round(time.time() - t0, 3)}, indent=1))
    return 0


def real_caches(cfg: TrainConfig, space: SearchSpace | None, use_ray: bool, cache: str | None,
                quiet: bool = False) -> list[dict]:
    """Fill the real-feature caches the trials of ``space`` (or a run of ``cfg``) can read, where the trials look
    for them: ``$ISP_SEARCH_REAL_CACHE``, else ``real-features`` beside the reference cache folder (``--cache``)."""
    root = Path(cache).absolute().with_name("real-features") if cache and not os.environ.get(REAL_ENV) else None
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        if space is not None:
            rows = build_real_caches(space, cfg, use_ray=use_ray, root=root)
            if not rows:
                print("real-feature caches: none, the trials' real images differ per draw (data.patch_size or "
                      "data.augment) or features.cache_real is false")
            return rows
        row = fill_real_cache(cfg, root)
        print(f"real-feature cache off: {row['off']}" if "off" in row else
              f"real-feature cache {row['key']}: {row['images']} images, {row['bytes'] / 1e6:.1f} MB, "
              + (f"built in {row['seconds']:.1f} s" if row["built"] else "already there"))
        return [row]


def bench(jobs: list, args: argparse.Namespace) -> int:
    """Per demosaicer: seconds and images/s to build all its stores with 1 and with N local workers."""
    n = args.workers or os.cpu_count() or 1
    rows = []
    for dm in dict.fromkeys(j.demosaicer for j in jobs):
        mine = [j for j in jobs if j.demosaicer == dm]
        images = sum(len(j.paths) for j in mine)
        row = {"demosaicer": dm, "images": images, "cpus": os.cpu_count()}
        for workers in dict.fromkeys([1, n]):
            scratch = tempfile.mkdtemp(prefix="isp-prepare-bench-")
            try:
                fresh = [P.StoreJob(j.root, j.split, j.demosaicer, j.paths) for j in mine]
                t0 = time.perf_counter()
                P.prepare(fresh, workers=workers, cache_dir=scratch, quiet=True)
                s = time.perf_counter() - t0
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            row[f"seconds_{workers}w"] = round(s, 3)
            row[f"images_per_s_{workers}w"] = round(images / s, 2)
        rows.append(row)
    if args.json:
        print(json.dumps({"workers": n, "bench": rows}, indent=1))
    else:
        for r in rows:
            print("  ".join(f"{k}={v}" for k, v in r.items()))
    return 0
