"""The prepare stage's real-feature caches: each one a trial can read, filled once, before the first trial.

Where the base config's ``features.cache_real`` resolves on (whole, unaugmented images), a trial reads its real
features from a folder keyed by the data set, the feature-input settings, the compute dtype and the frozen
networks' weights (:mod:`isp_search.train.real_cache`). :func:`plan` lists the distinct configs a trial of the
space can run as far as that key goes: the base config, each searched parameter that changes the key (all their
combinations, up to :data:`MAX_COMBINATIONS`) and every ``points_to_evaluate``. :func:`build` fills each as one Ray
task with the trials' resources (a GPU where a trial has one: the same device and dtype, so the same key), into
the shared cache folder (``$ISP_SEARCH_REAL_CACHE``, by default beside ``$ISP_SEARCH_CACHE``). Trials then only
read. :func:`size_problems` is preflight's check that the folder has room for them.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from pathlib import Path
from typing import Any

import ray

from isp_search.data.io import read_raw
from isp_search.data.splits import carve_splits, load_splits
from isp_search.errors import UserError
from isp_search.search.sampling import to_overrides
from isp_search.search.space import Param, SearchSpace
from isp_search.train.config import TrainConfig, apply_overrides
from isp_search.train.losses import LOSSES
from isp_search.train.real_cache import cache_settings, data_digest, default_root, fill_state, find_built
from isp_search.train.real_cache_build import branch_kind, bytes_per_image, cached_branches, fill_real_cache
from isp_search.train.step import BRANCH_NET

MAX_COMBINATIONS = 64  # more key-changing combinations than this: each parameter's values one at a time
FREE_BYTES_ENV = "ISP_SEARCH_CACHE_FREE_BYTES"  # pretend free bytes for the size check (tests)


def cache_identity(cfg: TrainConfig) -> tuple | None:
    """What of ``cfg`` goes into its real-feature cache's key (None: the cache is off whatever the images)."""
    d, f = cfg.data, cfg.features
    if f.cache_real is False or d.augment or d.patch_size is not None:
        return None
    nets = sorted({BRANCH_NET[LOSSES.get(t).branch] for t in cfg.active_terms if LOSSES.get(t).branch})
    return (str(d.root), d.format, d.synthetic, str(d.splits), d.n_val, d.n_test, d.demosaicer, cfg.pairing,
            cfg.content_lab, cfg.content_vs_reference, f.input, f.vit_img_size, cfg.backbone_weights, cfg.train.amp,
            cfg.train.device, tuple(nets), tuple(cached_branches(cfg)))


def _values(p: Param) -> list[Any]:
    """The values of ``p`` that can change a key: each choice, or the two ends of a range."""
    if p.type == "categorical":
        return list(p.choices)
    cast = int if p.type == "int" else float
    return [cast(p.low), cast(p.high)]


def _apply(cfg: TrainConfig, space: SearchSpace, values: dict[str, Any]) -> TrainConfig | None:
    try:
        return apply_overrides(cfg, to_overrides(space, values))
    except UserError:  # preflight names it; a value that cannot be a trial has no cache
        return None


def plan(space: SearchSpace, cfg: TrainConfig) -> list[TrainConfig]:
    """One config per distinct real-feature cache a trial of ``space`` (on base config ``cfg``) can read."""
    base = cache_identity(cfg)
    changing = {}
    for name, p in space.space.items():
        vals = _values(p)
        if any((c := _apply(cfg, space, {name: v})) is not None and cache_identity(c) != base for v in vals):
            changing[name] = vals
    if math.prod(len(v) for v in changing.values()) <= MAX_COMBINATIONS:
        combos = [dict(zip(changing, vs)) for vs in itertools.product(*changing.values())]
    else:
        combos = [{n: v} for n, vals in changing.items() for v in vals]
    configs = [cfg] + [_apply(cfg, space, c) for c in combos]
    configs += [_apply(cfg, space, dict(pt)) for pt in space.search.points_to_evaluate]
    out: dict[tuple, TrainConfig] = {}
    for c in configs:
        if c is not None and (ident := cache_identity(c)) is not None:
            out.setdefault(ident, c)
    return list(out.values())


def _closing(row: dict[str, Any]) -> str:
    if "off" in row:
        return f"prepare: real-feature cache off for a trial config: {row['off']}"
    size = f"{row['images']} images, {row['bytes'] / 1e6:.1f} MB"
    done = f"built in {row['seconds']:.1f} s" if row["built"] else "already there"
    return f"prepare: real-feature cache {row['key']}: {size}, {done}"


def build(space: SearchSpace, cfg: TrainConfig, use_ray: bool = True,
          root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Fill every cache of :func:`plan` (Ray tasks with the trials' resources, or here); one row per cache."""
    configs = plan(space, cfg)
    if not configs:
        return []
    where = root if root is not None else default_root()  # the workers' too where the nodes share one setup
    print(f"prepare: {len(configs)} real-feature cache(s) the trials can read, in {where}", flush=True)
    rows: list[dict[str, Any]] = []
    if not use_ray:
        for c in configs:
            rows.append(fill_real_cache(c, root))
            print(_closing(rows[-1]), flush=True)
        return _distinct(rows)
    res = space.resources
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, resources=dict(res.custom) or None,
                      max_retries=max(0, space.search.max_failures), retry_exceptions=False)(fill_real_cache)
    pending = [task.remote(c, root) for c in configs]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            rows.append(ray.get(done[0]))
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):
                raise UserError(f"prepare: real-feature cache: {e.cause}") from None
            raise
        print(_closing(rows[-1]), flush=True)
    return _distinct(rows)


def _distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cache folder (two configs can share a key); a build wins over an 'already there'."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "key" in r and (r["key"] not in out or r["built"]):
            out[r["key"]] = r
    return list(out.values())


def still_there(rows: list[dict[str, Any]] | None) -> bool:
    """Whether every recorded cache still has every row of its branches filled in sound files."""
    if rows is None:
        return False
    for r in rows:
        for b in r["branches"]:
            filled, total = fill_state(r["folder"], b)
            if total is None or filled < total:
                return False
    return True


def free_bytes(root: str | os.PathLike) -> int:
    """Free bytes where ``root`` is (or would be created); ``$ISP_SEARCH_CACHE_FREE_BYTES`` pretends a value."""
    if os.environ.get(FREE_BYTES_ENV):
        return int(os.environ[FREE_BYTES_ENV])
    p = Path(root).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def _train_listing(cfg: TrainConfig) -> Any | None:
    """The train split's files as training carves them (None: a synthetic set not generated yet)."""
    d = cfg.data
    if not Path(d.root).is_dir():
        return None
    if d.splits and Path(d.splits).is_file():
        splits = load_splits(d.splits, d.root, d.format)
    else:
        splits = carve_splits(d.root, d.format, 0, d.n_val, d.n_test, None)
    return splits.listing(d.root, "train")


def estimate(space: SearchSpace, cfg: TrainConfig, root: str | os.PathLike | None = None) -> tuple[int, int]:
    """(bytes the trials' real-feature caches still need under ``root``, caches planned); caches already built
    (found by their ``key.json``, every row filled) need nothing. Bytes per image come from the branches' output
    shapes at the data set's image size, in the trials' dtype (bfloat16 with a GPU and train.amp)."""
    root = Path(root) if root is not None else default_root()
    need, configs = 0, plan(space, cfg)
    for c in configs:
        listing = _train_listing(c)
        if listing is None or not listing.samples:
            continue
        hw = tuple(read_raw(listing.samples[0].raw_path).shape[:2])
        gpu = space.resources.gpu > 0 and c.train.device != "cpu"
        bf16 = gpu and c.train.amp
        rows = {"sample": len(listing.samples), "target": len(listing.rgb_pool)}
        per_image = bytes_per_image(c, hw, 2 if bf16 else 4)
        found = find_built(root, cache_settings(c, "bfloat16" if bf16 else "float32"), data_digest(listing))
        for b, n in per_image.items():
            filled, total = fill_state(found, b) if found is not None else (0, None)
            if total is None or filled < total:
                need += rows[branch_kind(c, b)] * n
    return need, len(configs)


def size_problems(space: SearchSpace, cfg: TrainConfig) -> list[tuple[str, str]]:
    """(``features.cache_real``, problem; fix) when the real-feature cache folder lacks room for the trials'
    caches (see :func:`estimate`; ``$ISP_SEARCH_CACHE_FREE_BYTES`` pretends the free space)."""
    root = default_root()
    need, n = estimate(space, cfg, root)
    if need == 0 or need <= (free := free_bytes(root)):
        return []
    return [("features.cache_real", (f"the trials' {n} real-feature cache(s) need about {need / 2**30:.2f} GiB, only "
                                     f"{free / 2**30:.2f} GiB free in {root}; fix: free space, set "
                                     "ISP_SEARCH_REAL_CACHE to a larger disk, or set features.cache_real: false"))]
