"""The prepare stage: every reference cache a study's trials (and its pretrain run) can ask for, built once.

A training config needs one store per split (train, val, test) for its ``data.demosaicer``; a search space can
ask for every choice of a searched ``data.demosaicer`` too. ``plan`` lists those stores, ``prepare`` builds the
missing ones — chunks computed by Ray tasks spread over the cluster's CPUs when Ray is running, else by local
processes — into ``$ISP_SEARCH_CACHE`` (on shared storage, every node then reads the same stores).

More per-config preparation (e.g. packed decoded arrays) goes in :data:`HOOKS`: each hook is called with every
planned training config after the references are built.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isp_search.data.cache import MapChunks, build_store, content_key, default_cache_dir, local_map, open_store
from isp_search.data.demosaic import ReferenceLook

SPLITS = ("train", "val", "test")
HOOKS: list[Callable[[Any], None]] = []  # more preparation per training config, run after the references


def _pack_hook(cfg: Any) -> None:
    """Packs of decoded images for configs with ``data.packed: true`` (isp_search.data.packed)."""
    from isp_search.commands.bench_data import pack_config

    pack_config(cfg)


HOOKS.append(_pack_hook)


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
    from isp_search.data.splits import carve_splits, load_splits

    d = cfg.data
    if d.synthetic:
        from isp_search.data.synth import ensure_synthetic

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


class Progress:
    """A tqdm bar on a terminal; plain lines every ``every_s`` seconds otherwise (job logs, CI)."""

    def __init__(self, total: int, desc: str, every_s: float = 10.0) -> None:
        self.total, self.done, self.desc, self.every_s = total, 0, desc, every_s
        self.t0 = self.last = time.time()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.time() - self.last >= self.every_s or self.done >= self.total:
            self.last = time.time()
            rate = self.done / max(self.last - self.t0, 1e-9)
            print(f"{self.desc}: {self.done}/{self.total} images ({rate:.1f} img/s)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def ray_map(hold: Callable[[], None] | None = None) -> MapChunks:
    """``map_chunks`` as Ray tasks (one CPU each) over the cluster, results in order, a bounded number in flight.

    ``hold`` is called once after the first chunk is written (the stage's fault-injection point, see ``prepare``).
    """
    import ray

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
        bar = Progress(len(j.paths), f"references {j.split}/{j.demosaicer}") if not quiet else None
        j.started = time.time()
        _, j.built = build_store(j.paths, j.demosaicer, look, None, root, mapper, bar, key=j.key)
        j.finished = time.time()
        j.seconds = j.finished - j.started
        if bar is not None:
            bar.close()
    return jobs


def still_there(rows: list[dict], jobs: list[StoreJob], cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether a recorded prepare stage covers ``jobs`` and each of its stores is still in the cache."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    look = ReferenceLook()
    want = {content_key(j.paths, j.demosaicer, look, None, root) for j in jobs}
    have = {r.get("key") for r in rows}
    return want <= have and all(open_store(k, root) is not None for k in want)


def run_hooks(configs: Sequence[Any]) -> None:
    for hook in HOOKS:
        for cfg in configs:
            hook(cfg)


def write_record(path: str | os.PathLike, jobs: list[StoreJob]) -> None:
    """``prepare.json``: one row per store (the stage's result; its presence means the stage is done)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({"stores": [j.row() for j in jobs], "finished": time.time()}, indent=1))
    os.replace(tmp, p)


def hold_point(marker: str | os.PathLike | None) -> Callable[[], None] | None:
    """Fault injection for the kill-and-resume tests: with ``ISP_SEARCH_HOLD=<stage>`` a stage writes ``marker``
    mid-way and then waits to be killed, so a test kills it at a known point. None when not asked for."""
    if marker is None:
        return None

    def hold() -> None:
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text(str(os.getpid()))
        while True:
            time.sleep(1)

    return hold
