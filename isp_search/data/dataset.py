"""``RawRGBDataset``: one split of a RAW/RGB data set as float32 tensors ready for a backbone.

Each item is a dict: ``input`` (the backbone's normalised input), ``raw`` (1 x H x W raw values), ``reference``
(3 x H x W demosaiced reference in [0, 1], from the on-disk cache), ``target`` (3 x H x W RGB chosen by the
pairing mode), ``paired_target`` (the same scene's RGB, only when the split has it) and ``index``. Keys are only
present when the data exist, so the default collate works and no value is ever None.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from isp_search.data.augment import augment_sample, random_op
from isp_search.data.cache import ReferenceStore, reference_store
from isp_search.data.demosaic import ReferenceLook
from isp_search.data.formats import get_format
from isp_search.data.io import read_raw, read_rgb
from isp_search.data.pairing import PAIRINGS, make_pairing
from isp_search.data.splits import Splits, carve_splits, load_splits
from isp_search.errors import UserError
from isp_search.models.registry import BackboneSpec, spec_for

AUTO_CACHE_LIMIT = 2048  # splits up to this many files keep decoded images in memory


def _fit(img: np.ndarray, h: int, w: int, rng: np.random.Generator | None) -> np.ndarray:
    """An RGB image of another size -> (h, w): a crop (random with ``rng``, else central) or, if too small, a resize."""
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    if ih < h or iw < w:
        s = max(h / ih, w / iw)
        img = cv2.resize(img, (max(w, round(iw * s)), max(h, round(ih * s))), interpolation=cv2.INTER_LINEAR)
        ih, iw = img.shape[:2]
    y = int(rng.integers(ih - h + 1)) if rng is not None else (ih - h) // 2
    x = int(rng.integers(iw - w + 1)) if rng is not None else (iw - w) // 2
    return img[y : y + h, x : x + w]


class RawRGBDataset(Dataset):
    """One split of a data set in a registered format (see ``isp_search.data.formats``)."""

    def __init__(
        self,
        root: str | os.PathLike,
        format: str,
        split: str,
        arch: str | BackboneSpec | None,
        preset: str | None = None,
        pairing: str = "paired",
        demosaicer: str = "menon2007",
        look: ReferenceLook = ReferenceLook(),
        augment: bool = False,
        seed: int = 0,
        splits: Splits | str | os.PathLike | None = None,
        carve_seed: int = 0,
        n_val: int | None = None,
        n_test: int | None = None,
        exclude: str | os.PathLike | list | None = None,
        cache_dir: str | os.PathLike | None = None,
        with_reference: bool = True,
        patch_size: int | None = None,
        cache_images: bool | None = None,
        reference_workers: int = 1,
    ) -> None:
        """``splits``: a carving, or a record file (reused as it is if present, else carved and written there);
        the carving comes from ``carve_seed``/``n_val``/``n_test``/``exclude``. ``patch_size`` crops RAW (and
        aligned images) to even-aligned square patches (random on train, central elsewhere); augmented items are
        patch_size too, without it they are 2 px smaller than the RAW (the CFA re-alignment crop). ``seed`` drives
        pairing and augmentation draws, which :meth:`set_epoch` re-draws deterministically. ``reference_workers``
        processes build a missing reference cache (large real sets)."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"data set folder not found: {self.root}")
        self.format = get_format(format).name
        self.split = split
        self.spec = spec_for(arch) if isinstance(arch, str) else arch
        self.preset = preset
        PAIRINGS.get(pairing)
        self.pairing_mode = pairing
        self.demosaicer = demosaicer
        self.look = look
        self.augment = augment
        self.seed = seed
        if patch_size is not None and (patch_size <= 0 or patch_size % 2):
            raise UserError(f"patch_size must be a positive even number, got {patch_size}")
        self.patch_size = patch_size
        if isinstance(splits, Splits):
            self.splits = splits
        elif splits is not None and Path(splits).is_file():  # reuse a recorded carving as it is
            self.splits = load_splits(splits, self.root, self.format)
        else:
            self.splits = carve_splits(self.root, format, carve_seed, n_val, n_test, exclude, record=splits)
        self.listing = self.splits.listing(self.root, split)
        if not self.listing.samples:
            raise UserError(f"{self.format} {split} split of {self.root} has no RAW files")
        self.references: ReferenceStore | None = None
        if with_reference:
            paths = [s.raw_path for s in self.listing.samples]
            self.references = reference_store(paths, demosaicer, look, None, cache_dir, reference_workers)
        n_files = len(self.listing.samples) + len(self.listing.rgb_pool)
        self.cache_images = n_files <= AUTO_CACHE_LIMIT if cache_images is None else cache_images
        self._images: dict[Path, np.ndarray] = {}
        self.epoch = 0
        self.set_epoch(0)

    @property
    def ids(self) -> list[int | str]:
        """File ids of this split's RAW samples; ``item["index"]`` indexes this list."""
        return [s.id for s in self.listing.samples]

    def set_epoch(self, epoch: int) -> None:
        """Re-draw targets (and augmentations) for ``epoch``; the same (seed, epoch) always gives the same draw.

        With persistent DataLoader workers call it before the workers start each epoch (or use non-persistent ones).
        """
        self.epoch = int(epoch)
        has_pool = len(self.listing.rgb_pool) > 0
        if has_pool or self.pairing_mode == "paired":
            self.pairing = make_pairing(
                self.pairing_mode, len(self.listing.samples), len(self.listing.rgb_pool), self.listing.paired,
                self.seed, self.epoch,
            )
        else:  # raw-only split: items without a target
            self.pairing = None

    def __len__(self) -> int:
        return len(self.pairing.raw) if self.pairing is not None else len(self.listing.samples)

    def _load(self, path: Path, reader) -> np.ndarray:
        img = self._images.get(path)
        if img is None:
            img = reader(path)
            if self.cache_images:
                self._images[path] = img
        return img

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        si = int(self.pairing.raw[k]) if self.pairing is not None else k
        sample = self.listing.samples[si]
        rng = np.random.default_rng([self.seed, self.epoch, k, 7]) if self.split == "train" else None
        raw = self._load(sample.raw_path, read_raw)
        aligned: dict[str, np.ndarray] = {}
        if self.references is not None:
            aligned["reference"] = self.references[si]
        if sample.rgb_path is not None:
            aligned["paired_target"] = _fit(self._load(sample.rgb_path, read_rgb), *raw.shape, None)
        # With augmentation the window is 2 px larger: the CFA re-alignment crops it back to patch_size.
        p = None if self.patch_size is None else self.patch_size + (2 if self.augment else 0)
        if p is not None and min(raw.shape) >= p and raw.shape != (p, p):
            h, w = raw.shape
            y = 2 * int(rng.integers((h - p) // 2 + 1)) if rng is not None else ((h - p) // 4) * 2
            x = 2 * int(rng.integers((w - p) // 2 + 1)) if rng is not None else ((w - p) // 4) * 2
            raw = raw[y : y + p, x : x + p]
            aligned = {n: a[y : y + p, x : x + p] for n, a in aligned.items()}
        if self.pairing is not None:
            ti = int(self.pairing.target[k])
            if self.pairing_mode == "paired" and "paired_target" in aligned:
                aligned["target"] = aligned["paired_target"]
            else:
                aligned["target"] = _fit(self._load(self.listing.rgb_pool[ti], read_rgb), *raw.shape, rng)
        if self.augment:
            op_rng = rng if rng is not None else np.random.default_rng([self.seed, self.epoch, k, 7])
            kk, flip = random_op(op_rng, raw.shape[0] == raw.shape[1])
            names = list(aligned)
            raw, outs = augment_sample(raw, [aligned[n] for n in names], kk, flip)
            aligned = dict(zip(names, outs))
        raw_t = torch.from_numpy(raw.astype(np.float32))
        item: dict[str, torch.Tensor] = {"raw": raw_t[None], "index": torch.tensor(si)}
        if self.spec is not None:
            item["input"] = self.spec.prepare_input(raw_t, self.preset)
        for name, a in aligned.items():
            item[name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32).transpose(2, 0, 1).copy())
        return item
