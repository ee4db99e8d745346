"""The prepare stage: every reference cache a study's trials (and its pretrain run) can ask for, built once.

A training config needs one store per split (train, val, test) for its ``data.demosaicer``; a search space can
ask for every choice of a searched ``data.demosaicer`` too. :func:`plan` lists those stores, :func:`prepare`
builds the missing ones (chunks computed by Ray tasks spread over the cluster's CPUs when Ray is running, else by
local processes) into ``$ISP_SEARCH_CACHE`` (on shared storage, every node then reads the same stores); configs
with ``data.packed: true`` get their packs of decoded images too. :func:`prepare_stage` is the study's stage:
it then fills every real-feature cache the trials can read (:mod:`isp_search.search.prepare_real`), and
``<exp>/prepare.json`` lists the stores and those caches with their build times.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from isp_search.data.cache import MapChunks, build_store, content_key, default_cache_dir, local_map, open_store
from isp_search.data.datasets import pack_config
from isp_search.data.demosaic import ReferenceLook
from isp_search.data.splits import carve_splits, load_splits
from isp_search.data.synth import ensure_synthetic
from isp_search.progress import Progress
from isp_search.search.context import StudyContext
from isp_search.search.experiment import read_json, write_json
from isp_search.search.faults import hold_marker, hold_point
from isp_search.search.prepare_real import build as build_real_caches
from isp_search.search.prepare_real import still_there as real_caches_still_there
from isp_search.search.pretrain import pretrain_config

SPLITS = ("train", "val", "test")
RECORD = "prepare.json"


@dataclass
class StoreJob:
    """One reference store: the files of one split under one demosaicer."""

    root: str
    split: str
    demosaicer: str
    paths: list[str]
    key: str = ""
    built: bool = False
    seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    extra: dict = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        n = len(self.paths)
        return {"root": self.root, "split": self.split, "demosaicer": self.demosaicer, "images": n,
                "key": self.key, "built": self.built, "seconds": round(self.seconds, 3),
                "images_per_s": round(n / self.seconds, 2) if self.built and self.seconds > 0 else None,
                "started": self.started, "finished": self.finished}


def split_paths(cfg: Any) -> dict[str, list[str]]:
    """RAW files of each split of ``cfg``'s data set, carved exactly as training carves them."""
    d = cfg.data
    if d.synthetic:
        ensure_synthetic(d.root, d.format)
    if d.splits and Path(d.splits).is_file():
        splits = load_splits(d.splits, d.root, d.format)
    else:
        splits = carve_splits(d.root, d.format, 0, d.n_val, d.n_test, None, record=d.splits)
    out = {}
    for split in SPLITS:
        if split in splits.parts:
            paths = [str(s.raw_path) for s in splits.listing(d.root, split).samples]
            if paths:
                out[split] = paths
    return out


def plan(configs: Sequence[Any], demosaicers: Sequence[str] = ()) -> list[StoreJob]:
    """The stores of every config (its own demosaicer and each of ``demosaicers``), without duplicates."""
    jobs: dict[tuple, StoreJob] = {}
    for cfg in configs:
        names = dict.fromkeys([cfg.data.demosaicer, *demosaicers])
        for split, paths in split_paths(cfg).items():
            for dm in names:
                jobs.setdefault((tuple(paths), dm), StoreJob(str(cfg.data.root), split, dm, paths))
    return list(jobs.values())


def space_demosaicers(space: Any) -> list[str]:
    """Every demosaicer a trial of ``space`` can train with (searched choices and enqueued points)."""
    out: list[str] = []
    p = space.space.get("data.demosaicer")
    if p is not None and p.type == "categorical":
        out += [str(c) for c in p.choices]
    out += [str(pt["data.demosaicer"]) for pt in space.search.points_to_evaluate if "data.demosaicer" in pt]
    return list(dict.fromkeys(out))


def ray_map(hold: Callable[[], None] | None = None) -> MapChunks:
    """``map_chunks`` as Ray tasks (one CPU each) over the cluster, results in order, a bounded number in flight.

    ``hold`` is called once after the first chunk is written (the stage's fault-injection point, see ``prepare``).
    """
    @ray.remote(num_cpus=1, max_retries=3)
    def compute(fn: Callable, chunk: list[str]) -> list:
        return fn(chunk)

    def run(fn: Callable, chunks: list[list[str]]) -> Iterator[list]:
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        refs = [compute.remote(fn, c) for c in chunks[:window]]
        for i in range(len(chunks)):
            if i + window < len(chunks):
                refs.append(compute.remote(fn, chunks[i + window]))
            yield ray.get(refs[i])
            refs[i] = None  # let the object store free it
            if i == 0 and hold is not None:
                hold()

    return run


def _local_map_with_hold(workers: int, hold: Callable[[], None] | None) -> MapChunks:
    base = local_map(workers)

    def run(fn: Callable, chunks: list[list[str]]) -> Iterator[list]:
        for i, refs in enumerate(base(fn, chunks)):
            yield refs
            if i == 0 and hold is not None:
                hold()

    return run


def prepare(jobs: list[StoreJob], *, use_ray: bool = False, workers: int | None = None,
            cache_dir: str | os.PathLike | None = None, hold: Callable[[], None] | None = None,
            quiet: bool = False) -> list[StoreJob]:
    """Build every missing store of ``jobs`` (Ray tasks or ``workers`` local processes); fills in keys/timings."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    look = ReferenceLook()
    for j in jobs:
        j.key = content_key(j.paths, j.demosaicer, look, None, root)
    todo = [j for j in jobs if open_store(j.key, root) is None]
    if not quiet:
        print(f"prepare: {len(jobs)} reference stores in {root}, {len(jobs) - len(todo)} already there", flush=True)
    workers = workers or os.cpu_count() or 1
    for j in todo:
        mapper = ray_map(hold) if use_ray else _local_map_with_hold(workers, hold)
        bar = Progress(len(j.paths), f"references {j.split}/{j.demosaicer}", unit="img", every_s=10.0,
                       stream=sys.stdout, enabled=not quiet)
        j.started = time.time()
        _, j.built = build_store(j.paths, j.demosaicer, look, None, root, mapper, bar.update, key=j.key)
        j.finished = time.time()
        j.seconds = j.finished - j.started
        bar.close()
    return jobs


def still_there(rows: list[dict], jobs: list[StoreJob], cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether a recorded prepare stage covers ``jobs`` and each of its stores is still in the cache."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    look = ReferenceLook()
    want = {content_key(j.paths, j.demosaicer, look, None, root) for j in jobs}
    have = {r.get("key") for r in rows}
    return want <= have and all(open_store(k, root) is not None for k in want)


def pack(configs: Sequence[Any]) -> None:
    """The packs of decoded images of every config that asks for them (``data.packed: true``)."""
    for cfg in configs:
        pack_config(cfg)


def prepare_stage(ctx: StudyContext) -> list[StoreJob]:
    """Build every reference store and real-feature cache a trial of the study (and its pretrain run) can ask
    for; record them."""
    pre = pretrain_config(ctx.space)
    configs = ([pre] if pre is not None else []) + [ctx.cfg]
    jobs = plan(configs, space_demosaicers(ctx.space))
    record = read_json(f"{ctx.exp.uri}/{RECORD}")
    if record and still_there(record["stores"], jobs) and real_caches_still_there(record.get("real_caches")):
        print(f"prepare: {len(jobs)} reference stores, {len(record['real_caches'])} real-feature caches "
              "(recorded by this study, all present)", flush=True)  # done by an earlier run of this study
        pack(configs)  # a pack already built is found, not rebuilt
        return jobs
    prepare(jobs, use_ray=True, hold=hold_point(hold_marker(ctx.exp.uri, "prepare")))
    pack(configs)
    caches = build_real_caches(ctx.space, ctx.cfg)  # after the stores: its tasks read the references
    write_json(f"{ctx.exp.uri}/{RECORD}", {"stores": [j.row() for j in jobs], "real_caches": caches,
                                           "finished": time.time()})
    return jobs
