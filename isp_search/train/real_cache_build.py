"""The real-feature cache of a training config, filled ahead of training, and its size estimated before that.

:func:`fill_real_cache` computes every row of every cached branch a run of ``cfg`` reads (each RAW sample's
reference and each photo of the pool, through the same :class:`~isp_search.train.step.Branches` as a training
step, on the device and in the dtype the run would use), so the run only reads. A search's prepare stage calls it
once per distinct cache (:mod:`isp_search.search.prepare_real`). :func:`bytes_per_image` gives each branch's
bytes per image from a dry forward on the ``meta`` device (shapes only: no weights, no compute); preflight
multiplies it by the images.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from isp_search.data.datasets import make_datasets
from isp_search.data.pairing import Pairing
from isp_search.progress import Progress
from isp_search.train.features import LPIPSAlexTrunk, VGGRelu54, ViTTokens
from isp_search.train.loop import STEP_KEYS, pick_device
from isp_search.train.losses import LOSSES
from isp_search.train.real_cache import CACHED_BRANCHES, open_real_cache, varying_real_images
from isp_search.train.step import BRANCH_NET, Branches, FrozenNets


def cached_branches(cfg: Any) -> list[str]:
    """The branches of ``cfg``'s active terms whose real features the cache keeps."""
    return sorted({LOSSES.get(t).branch for t in cfg.active_terms} & set(CACHED_BRANCHES))


def branch_kind(cfg: Any, branch: str) -> str:
    """Which rows key ``branch``: ``sample`` (the content term on the RAW's reference) or ``target`` (a photo)."""
    return "sample" if branch == "content" and cfg.content_vs_reference else "target"


def compute_dtype(cfg: Any, device: torch.device) -> str:
    """The frozen networks' compute dtype of a run on ``device`` (bfloat16 under CUDA autocast)."""
    return "bfloat16" if device.type == "cuda" and cfg.train.amp else "float32"


def covering_pairing(ds: Any) -> Pairing:
    """Items that draw every RAW sample and every photo of the pool at least once (paired: each with its own)."""
    n_s, n_p = len(ds.listing.samples), len(ds.listing.rgb_pool)
    if ds.pairing_mode == "paired":
        return Pairing(np.arange(n_s), np.arange(n_s))
    m = max(n_s, n_p)
    return Pairing(np.arange(m) % n_s, np.arange(m) % max(n_p, 1))


def fill_real_cache(cfg: Any, root: str | os.PathLike | None = None, label: str = "real-feature cache",
                    stream: Any = None) -> dict[str, Any]:
    """Fill every row of ``cfg``'s real-feature cache under ``root`` (default: ``$ISP_SEARCH_REAL_CACHE``).

    Returns ``{key, folder, images, bytes, built, seconds, started, finished, rebuilt}``, or ``{off: why}`` where
    the run would not use the cache. A progress line every 10 s (``stream``, default stdout)."""
    device = pick_device(cfg.train.device)
    ds = make_datasets(cfg)["train"]
    if cfg.features.cache_real is False or (why := varying_real_images(cfg, ds)):
        return {"off": "features.cache_real is false" if cfg.features.cache_real is False else why}
    nets = FrozenNets(cfg.active_terms, cfg.backbone_weights, cfg.features.vit_img_size, cfg.features.input).to(device)
    dtype = compute_dtype(cfg, device)
    cache = open_real_cache(cfg, ds, nets, device, dtype, root)
    assert cache is not None
    branches = cached_branches(cfg)
    images = len(ds.listing.samples) + len(ds.listing.rgb_pool)
    started = time.time()
    built = not cache.filled(branches)
    if built:
        cuda = device.type == "cuda"
        if cuda and cfg.train.channels_last:  # as the run has them: the same kernels, the same features
            nets = nets.to(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cfg.train.amp else contextlib.nullcontext()
        ds.pairing = covering_pairing(ds)  # this dataset is ours: its items visit every row once
        bar = Progress(len(ds), f"{label} {cache.folder.name}", unit="img", every_s=10.0,
                       stream=stream or sys.stdout)
        for batch in DataLoader(ds, batch_size=cfg.train.batch_size, num_workers=cfg.data.workers, pin_memory=cuda):
            batch = {k: v.to(device, non_blocking=True) if k in STEP_KEYS else v for k, v in batch.items()}
            br = Branches(nets, batch["target"], batch, cfg.content_lab, autocast,
                          content_ref=cfg.content_vs_reference, real_cache=cache)
            for b in branches:
                br.real(b)
            bar.update(len(batch["index"]))
        bar.close()
        if not cache.filled(branches):
            raise RuntimeError(f"{cache.folder}: rows left unfilled after a pass over every image")
    finished = time.time()
    return {"key": cache.folder.name, "folder": str(cache.folder), "images": images, "branches": branches,
            "bytes": cache_bytes(cache.folder, branches), "built": built, "rebuilt": cache.rebuilt,
            "seconds": round(finished - started, 3), "started": started, "finished": finished}


def cache_bytes(folder: str | os.PathLike, branches: list[str]) -> int:
    """Bytes of the feature files of ``branches`` in ``folder`` (apparent size)."""
    return sum(p.stat().st_size for b in branches for p in Path(folder).glob(f"{b}.*.bin"))


_META_BUILDERS: dict[str, Callable[[Any], nn.Module]] = {
    "vgg": lambda cfg: VGGRelu54("random"),
    "vit": lambda cfg: ViTTokens("random", cfg.features.vit_img_size, cfg.features.input),
    "alex": lambda cfg: LPIPSAlexTrunk("random", cfg.features.input),
}


def bytes_per_image(cfg: Any, hw: tuple[int, int], itemsize: int) -> dict[str, int]:
    """Bytes one image of size ``hw`` takes in each cached branch of ``cfg`` (``itemsize``: 4 float32, 2 bf16).

    A dry forward of the branches on the ``meta`` device: the networks' true output shapes at this size,
    computed without weights or arithmetic (random-init architectures: the weights do not change shapes)."""
    branches = cached_branches(cfg)
    nets = nn.Module()
    with torch.device("meta"):
        for name in sorted({BRANCH_NET[b] for b in branches}):
            nets.add_module(name, _META_BUILDERS[name](cfg))
        img = torch.empty(1, 3, *hw)
        ids = torch.zeros(1, dtype=torch.long)
        br = Branches(nets, img, {"reference": img, "target": img, "index": ids, "target_index": ids},
                      cfg.content_lab, content_ref=cfg.content_vs_reference)
        out = {}
        for b in branches:
            feats = br.real(b)
            out[b] = sum(f[0].numel() for f in (feats if isinstance(feats, tuple) else (feats,))) * itemsize
    return out
