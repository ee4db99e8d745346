"""The datasets of a training config: train (the mode's pairing, augmentation), val and test (paired, central
crops), and the packs of decoded images a config asks for (``data.packed: true``)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from isp_search.data.dataset import Caching, Carving, ItemOptions, RawRGBDataset
from isp_search.data.demosaic import ReferenceLook
from isp_search.data.packed import PackedImages
from isp_search.data.synth import ensure_synthetic
from isp_search.errors import UserError


def make_datasets(cfg: Any) -> dict[str, RawRGBDataset]:
    """Train, val and test datasets of a training config (a set without val or test: what exists)."""
    d = cfg.data
    if d.synthetic:
        ensure_synthetic(d.root, d.format)
    carving = Carving(splits=d.splits, seed=0, n_val=d.n_val, n_test=d.n_test)
    caching = Caching(demosaicer=d.demosaicer, look=ReferenceLook(), packed=d.packed, progress=cfg.train.progress,
                      workers=d.cache_workers or len(os.sched_getaffinity(0)))
    train_items = ItemOptions(pairing=cfg.pairing, augment=d.augment, seed=cfg.train.seed, patch_size=d.patch_size)
    out = {"train": RawRGBDataset(d.root, d.format, "train", cfg.model.arch, cfg.model.preset, carving, caching,
                                  train_items)}
    for split in ("val", "test"):
        try:
            out[split] = RawRGBDataset(d.root, d.format, split, cfg.model.arch, cfg.model.preset, carving, caching,
                                       ItemOptions(pairing="paired", patch_size=d.patch_size))
        except UserError as e:  # a set without this split: evaluate what exists
            if "no RAW files" not in str(e) and "split" not in str(e):
                raise
    return out


def pack_config(cfg: Any, force: bool = False) -> dict[str, PackedImages]:
    """Build the packs of every split of a training config (``data.packed: true``, or ``force``); returns
    ``{split: PackedImages}`` (empty when the config does not ask for packing). ``isp-search prepare`` and the
    search's prepare stage call this for every planned config."""
    if cfg.data.packed is not True and not force:
        return {}
    cfg = replace(cfg, data=replace(cfg.data, packed=True))
    return {split: ds.packed for split, ds in make_datasets(cfg).items()}
