"""``isp-search bench-data CONFIG``: does the data pipeline keep up with the training step?

Measures the train split's items/s in one process (one torch thread, as a DataLoader worker runs) from each source
that applies — decoding the image files, the memory-mapped pack (:mod:`isp_search.data.packed`), images held in
memory (small sets) — then the DataLoader with the config's workers, and the rate at which a training step consumes
items (``batch / step time`` from a short ``bench-train``). ``--pack`` first builds the packs of every split.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from isp_search.data.dataset import AUTO_CACHE_LIMIT, keep_freed_memory
from isp_search.data.datasets import make_datasets, pack_config
from isp_search.diagnostics.bench_train import bench_train
from isp_search.errors import UserError
from isp_search.train import load_train_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-data", help="items/s of the data pipeline (files, pack, DataLoader) against the step's consumption",
        description="Times the train split of CONFIG: items/s in one process from the image files, from the "
        "memory-mapped pack (when there is one) and from memory (small sets); items/s of the DataLoader with "
        "--workers; and the items/s a training step consumes (batch size / step time from a short bench-train, "
        "or --step-ms). Says whether data is the bottleneck. --pack builds the packs of the config's splits first "
        "(then training reads them with data.packed: auto).")
    p.add_argument("config", metavar="CONFIG", help="training YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--pack", action="store_true",
                   help="build the memory-mapped packs of decoded images of every split first (data.cache_workers)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default: 3)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: data.workers)")
    p.add_argument("--steps", type=int, default=2, help="timed training steps for the consumption rate (default: 2)")
    p.add_argument("--step-ms", type=float, default=None,
                   help="use this step time (ms, e.g. measured on the training GPU) instead of timing steps here")
    p.add_argument("--no-step", action="store_true", help="skip the training step (loader numbers only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def items_per_s(ds: Any, seconds: float) -> dict[str, float]:
    """``ds[k]`` in a loop for about ``seconds`` in this process with one torch thread: items per second of wall
    time and per CPU second (the second is what a worker gets on an idle core; the first depends on the load)."""


    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    keep_freed_memory()  # as in a loader worker
    try:
        n = len(ds)
        for k in range(min(n, 4)):  # warm-up: page cache, allocator
            ds[k]
        count, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            ds[count % n]
            count += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(threads)
    return {"items_per_s": count / wall, "items_per_cpu_s": count / max(cpu, 1e-9), "items": count}


def loader_items_per_s(ds: Any, batch_size: int, workers: int, seconds: float) -> dict[str, float]:
    """Items per second out of a DataLoader (after its first batch, so worker start-up is left out)."""

    batch_size = min(batch_size, len(ds))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    it, count, t0 = iter(loader), 0, None
    while True:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
        if t0 is None:
            t0 = time.perf_counter()
            continue
        count += batch_size
        if time.perf_counter() - t0 >= seconds:
            break
    rate = count / (time.perf_counter() - t0)
    del it, loader
    return {"workers": workers, "batch_size": batch_size, "items_per_s": rate,
            "items_per_s_per_worker": rate / max(workers, 1)}


def bench_data(cfg: Any, seconds: float = 3.0, workers: int | None = None, steps: int = 2,
               step_ms: float | None = None, with_step: bool = True) -> dict[str, Any]:
    """Every number ``bench-data`` prints, as one dict."""

    ds = make_datasets(cfg)["train"]
    item = ds[0]
    size = list(item["raw"].shape[-2:])
    pack = ds.packed or ds.find_pack()
    sources: dict[str, dict[str, float]] = {}
    files = copy.copy(ds)
    files.packed, files.cache_images, files._images = None, False, {}
    sources["files"] = items_per_s(files, seconds)
    if pack is not None:
        packed = copy.copy(ds)
        packed.packed, packed.cache_images, packed._images = pack, False, {}
        sources["packed"] = items_per_s(packed, seconds)
    n_files = len(ds.listing.samples) + len(ds._rgb_paths)
    if n_files <= AUTO_CACHE_LIMIT:
        memory = copy.copy(ds)
        memory.packed, memory.cache_images, memory._images = None, True, {}
        for k in range(len(memory)):  # what a small set's workers hold after the first epoch
            memory[k]
        sources["memory"] = items_per_s(memory, seconds)
    used = "packed" if ds.packed is not None else ("memory" if ds.cache_images else "files")
    workers = cfg.data.workers if workers is None else workers
    res: dict[str, Any] = {
        "config": cfg.name, "split": "train", "items": len(ds), "size": size, "pairing": ds.pairing_mode,
        "source": used, "pack": str(pack.folder) if pack is not None else None,
        "pack_gb": pack.nbytes / 1e9 if pack is not None else None, "one_process": sources,
        "loader": loader_items_per_s(ds, cfg.train.batch_size, workers, seconds),
        "cpu_cores": len(os.sched_getaffinity(0)),
    }
    if step_ms is None and with_step:
        b = bench_train(cfg, steps)
        step_ms = b["step_ms"] - b["time_ms"].get("data_wait", 0.0)
        res["step_device"], res["step_batch_size"] = b["device"], b["batch_size"]
    if step_ms is not None:
        batch = res.get("step_batch_size", cfg.train.batch_size)
        res["step_ms"] = step_ms
        res["step_items_per_s"] = 1000.0 * batch / step_ms
        res["data_bound"] = res["loader"]["items_per_s"] < res["step_items_per_s"]
    return res


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.steps < 1 or (args.workers is not None and args.workers < 0):
        raise UserError("--seconds must be > 0, --steps >= 1 and --workers >= 0")
    cfg = load_train_config(args.config, args.overrides)
    if args.pack:  # every split, as isp-search prepare --pack does
        for split, pack in pack_config(cfg, force=True).items():
            print(f"pack of {split}: {pack.folder} ({pack.nbytes / 1e9:.2f} GB)")
    res = bench_data(cfg, args.seconds, args.workers, args.steps, args.step_ms, not args.no_step)
    if args.json:
        print(json.dumps(res))
        return 0
    h, w = res["size"]
    print(f"{res['config'] or args.config}: train split, {res['items']} items of {h}x{w} ({res['pairing']}), "
          f"training reads from {res['source']}" + (f" ({res['pack']}, {res['pack_gb']:.2f} GB)" if res["pack"]
                                                     else ""))
    print("  one process (one torch thread, as a loader worker):")
    for name, r in res["one_process"].items():
        print(f"    {name:7s} {r['items_per_s']:8.0f} items/s   ({r['items_per_cpu_s']:.0f} per CPU second)")
    ld = res["loader"]
    print(f"  DataLoader, {ld['workers']} workers, batch {ld['batch_size']}: {ld['items_per_s']:.0f} items/s "
          f"({ld['items_per_s_per_worker']:.0f} per worker; {res['cpu_cores']} CPU cores here)")
    if "step_ms" in res:
        where = f" on {res['step_device']}" if "step_device" in res else " (--step-ms)"
        print(f"  training step{where}: {res['step_ms']:.0f} ms -> consumes {res['step_items_per_s']:.3g} items/s")
        if res["data_bound"]:
            need = res["step_items_per_s"] / max(ld["items_per_s_per_worker"], 1e-9)
            pack = "" if res["source"] == "packed" else "pack the images (--pack) or "
            print(f"  data is the bottleneck: the loader gives {ld['items_per_s']:.0f} of "
                  f"{res['step_items_per_s']:.0f} items/s; {pack}use >= {need:.0f} workers (data.workers)")
        else:
            print(f"  data keeps up: the loader gives {ld['items_per_s']:.0f} >= {res['step_items_per_s']:.3g} items/s")
    return 0
