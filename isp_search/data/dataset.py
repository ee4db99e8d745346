"""``RawRGBDataset``: one split of a RAW/RGB data set as float32 tensors ready for a backbone.

Each item is a dict: ``input`` (the backbone's normalised input), ``raw`` (1 x H x W raw values), ``reference``
(3 x H x W demosaiced reference in [0, 1], from the on-disk cache), ``target`` (3 x H x W RGB chosen by the
pairing mode), ``paired_target`` (the same scene's RGB, when the split has it and the items use it: paired pairing,
evaluation) and ``index``. Keys are only present when the data exist, so the default collate works and no value is
ever None. An unpaired (shuffled/disjoint) training item decodes no photo but its drawn target.

Images come from a pack of decoded arrays (:mod:`isp_search.data.packed`) when one exists (``packed="auto"``) or
is asked for (``packed=True`` builds it), else from the files; small splits keep decoded images in memory.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from isp_search.data.augment import augment_sample, random_op
from isp_search.data.cache import ReferenceStore, build_store, content_key, local_map, open_store
from isp_search.data.demosaic import DEMOSAICERS, ReferenceLook
from isp_search.data.formats import get_format
from isp_search.data.io import RGB_SCALES, decode_rgb, read_raw, rgb_to_float
from isp_search.data.packed import PackedImages, build_pack, open_pack
from isp_search.data.pairing import PAIRINGS, make_pairing
from isp_search.data.splits import Splits, carve_splits, load_splits
from isp_search.errors import UserError
from isp_search.models.registry import BackboneSpec, spec_for
from isp_search.progress import Progress

AUTO_CACHE_LIMIT = 2048  # splits up to this many files keep decoded images in memory
_TUNED_PID = 0  # the process whose allocator keep_freed_memory() has set up


def keep_freed_memory() -> None:
    """glibc only: keep freed blocks for reuse instead of handing them back to the OS at once.

    A loader worker allocates several MB per item and frees a whole batch after collating it; by default glibc
    returns that memory and the next batch page-faults it in again, zero-filled, which measured as half of a 448²
    item's cost. Called once per worker process (from ``__getitem__``), never in the training process.
    """
    global _TUNED_PID
    if _TUNED_PID == os.getpid():
        return
    _TUNED_PID = os.getpid()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)  # blocks below 64 MB come from the heap, not fresh maps
    libc.mallopt(m_trim_threshold, 1 << 30)  # and stay there for the next batch


def _fit(img: np.ndarray, h: int, w: int, rng: np.random.Generator | None) -> np.ndarray:
    """An RGB image of another size -> (h, w): a crop (random with ``rng``, else central) or, if too small, a resize
    (of the float image, so the result does not depend on where the image was decoded from)."""
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    if ih < h or iw < w:
        s = max(h / ih, w / iw)
        img = cv2.resize(rgb_to_float(img) if img.dtype != np.float32 else img,
                         (max(w, round(iw * s)), max(h, round(ih * s))), interpolation=cv2.INTER_LINEAR)
        ih, iw = img.shape[:2]
    y = int(rng.integers(ih - h + 1)) if rng is not None else (ih - h) // 2
    x = int(rng.integers(iw - w + 1)) if rng is not None else (iw - w) // 2
    return img[y : y + h, x : x + w]


def _chw_float(a: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8/uint16 (scaled to [0, 1]) or float32 -> contiguous float32 (C, H, W), in one pass.

    The division is the one of :func:`~isp_search.data.io.rgb_to_float` and of the reference store (uint16 full
    scale 65535 for both), so every source gives the same bits."""
    out = np.empty((a.shape[2], a.shape[0], a.shape[1]), np.float32)
    src = a.transpose(2, 0, 1)
    if a.dtype == np.float32:
        np.copyto(out, src)
    else:
        np.divide(src, np.float32(RGB_SCALES[a.dtype]), out=out)
    return out


@dataclass(frozen=True)
class Carving:
    """Which files make up each split."""

    splits: Splits | str | os.PathLike | None = None  # a carving, or a record file (reused if present, else written)
    seed: int = 0  # the carving's seed
    n_val: int | None = None  # images carved for val / test out of a paired train split (formats without them)
    n_test: int | None = None
    exclude: str | os.PathLike | list | None = None  # files never used (a list, or a file listing them)


@dataclass(frozen=True)
class ItemOptions:
    """How each item is drawn."""

    pairing: str = "paired"  # paired | shuffled | disjoint (isp_search.data.pairing)
    augment: bool = False
    seed: int = 0  # pairing and augmentation draws; set_epoch re-draws them deterministically
    # even-aligned square crops of RAW (and aligned images): random on train, central elsewhere; augmented items
    # are patch_size too, without it they are 2 px smaller than the RAW (the CFA re-alignment crop)
    patch_size: int | None = None
    paired_target: bool | None = None  # items carry the scene's own RGB (None: only with "paired" pairing)


@dataclass(frozen=True)
class Caching:
    """What is read from (and, when missing, built into) the disk caches."""

    demosaicer: str = "menon2007"
    look: ReferenceLook = ReferenceLook()
    with_reference: bool = True  # the demosaiced reference of every RAW (training needs it; evaluation does not)
    cache_dir: str | os.PathLike | None = None  # default: $ISP_SEARCH_CACHE
    cache_images: bool | None = None  # decoded images kept in memory (None: for small sets without a pack)
    packed: bool | Literal["auto"] = "auto"  # auto: read an existing pack; True: build one; False: decode files
    workers: int = 1  # processes that build a missing reference store or pack
    progress: bool = True  # a progress bar on a terminal while building


class RawRGBDataset(Dataset):
    """One split of a data set in a registered format (see ``isp_search.data.formats``)."""

    def __init__(self, root: str | os.PathLike, format: str, split: str, arch: str | BackboneSpec | None,
                 preset: str | None = None, carving: Carving = Carving(), caching: Caching = Caching(),
                 items: ItemOptions = ItemOptions()) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"data set folder not found: {self.root}")
        self.format = get_format(format).name
        self.split = split
        self.spec = spec_for(arch) if isinstance(arch, str) else arch
        self.preset = preset
        PAIRINGS.get(items.pairing)
        self.pairing_mode = items.pairing
        self.demosaicer = caching.demosaicer
        self.look = caching.look
        self.augment = items.augment
        self.seed = items.seed
        patch_size = items.patch_size
        if patch_size is not None and (patch_size <= 0 or patch_size % 2):
            raise UserError(f"patch_size must be a positive even number, got {patch_size}")
        self.patch_size = patch_size
        splits = carving.splits
        if isinstance(splits, Splits):
            self.splits = splits
        elif splits is not None and Path(splits).is_file():  # reuse a recorded carving as it is
            self.splits = load_splits(splits, self.root, self.format)
        else:
            self.splits = carve_splits(self.root, format, carving.seed, carving.n_val, carving.n_test,
                                       carving.exclude, record=splits)
        self.listing = self.splits.listing(self.root, split)
        if not self.listing.samples:
            raise UserError(f"{self.format} {split} split of {self.root} has no RAW files")
        self.with_paired_target = items.pairing == "paired" if items.paired_target is None else items.paired_target
        raw_paths = [s.raw_path for s in self.listing.samples]
        self.references: ReferenceStore | None = None
        if caching.with_reference:
            self.references = _references(raw_paths, caching.demosaicer, caching.look, caching.cache_dir,
                                          caching.workers, caching.progress)
        # Photos by position in one de-duplicated list (the pool plus any sample's own RGB outside it)
        self._rgb_paths = list(dict.fromkeys([*self.listing.rgb_pool,
                                              *(s.rgb_path for s in self.listing.samples if s.rgb_path)]))
        self._rgb_slot = {p: j for j, p in enumerate(self._rgb_paths)}
        if caching.packed not in ("auto", True, False):
            raise UserError(f"packed must be auto, true or false, got {caching.packed!r}")
        self.cache_dir = caching.cache_dir
        self.packed: PackedImages | None = None
        if caching.packed is not False:
            self.packed = self.find_pack(build=caching.packed is True, workers=caching.workers,
                                         progress=caching.progress)
        n_files = len(raw_paths) + len(self._rgb_paths)
        auto_cache = n_files <= AUTO_CACHE_LIMIT and self.packed is None  # a pack is already in the page cache
        self.cache_images = auto_cache if caching.cache_images is None else caching.cache_images
        self._images: dict[Path, np.ndarray] = {}
        self.epoch = 0
        self.set_epoch(0)

    def find_pack(self, build: bool = False, workers: int = 1, progress: bool = True) -> PackedImages | None:
        """This split's pack of decoded images: the existing one, else (``build``) a new one, else None."""
        raw_paths = [s.raw_path for s in self.listing.samples]
        if build:
            return build_pack(raw_paths, self._rgb_paths, self.cache_dir, workers, progress)[0]
        return open_pack(raw_paths, self._rgb_paths, self.cache_dir)

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

    def _raw(self, si: int) -> np.ndarray:
        """Sample ``si``'s mosaic, uint16 (H, W) (a read-only view when packed)."""
        if self.packed is not None:
            return self.packed.raw(si)
        path = self.listing.samples[si].raw_path
        img = self._images.get(path)
        if img is None:
            img = read_raw(path)
            if self.cache_images:
                self._images[path] = img
        return img

    def _rgb(self, path: Path) -> np.ndarray:
        """A photo as decoded, uint8/uint16 (H, W, 3) in RGB order (a read-only view when packed)."""
        if self.packed is not None:
            return self.packed.rgb(self._rgb_slot[path])
        img = self._images.get(path)
        if img is None:
            img = decode_rgb(path)
            if self.cache_images:
                self._images[path] = img
        return img

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if _TUNED_PID != os.getpid() and torch.utils.data.get_worker_info() is not None:
            keep_freed_memory()
        si = int(self.pairing.raw[k]) if self.pairing is not None else k
        sample = self.listing.samples[si]
        rng = np.random.default_rng([self.seed, self.epoch, k, 7]) if self.split == "train" else None
        raw = self._raw(si)
        # Images stay as stored (uint8/uint16 views) through crops and flips; one pass converts them at the end.
        aligned: dict[str, np.ndarray] = {}
        if self.references is not None:
            aligned["reference"] = self.references.quantised(si)
        paired = self.pairing is not None and self.pairing_mode == "paired"
        if sample.rgb_path is not None and (self.with_paired_target or paired):  # the scene's own RGB
            aligned["own"] = _fit(self._rgb(sample.rgb_path), *raw.shape, None)
        # With augmentation the window is 2 px larger: the CFA re-alignment crops it back to patch_size.
        p = None if self.patch_size is None else self.patch_size + (2 if self.augment else 0)
        if p is not None and min(raw.shape) >= p and raw.shape != (p, p):
            h, w = raw.shape
            y = 2 * int(rng.integers((h - p) // 2 + 1)) if rng is not None else ((h - p) // 4) * 2
            x = 2 * int(rng.integers((w - p) // 2 + 1)) if rng is not None else ((w - p) // 4) * 2
            raw = raw[y : y + p, x : x + p]
            aligned = {n: a[y : y + p, x : x + p] for n, a in aligned.items()}
        if self.pairing is not None and not paired:
            ti = int(self.pairing.target[k])
            aligned["target"] = _fit(self._rgb(self.listing.rgb_pool[ti]), *raw.shape, rng)
        if self.augment:
            op_rng = rng if rng is not None else np.random.default_rng([self.seed, self.epoch, k, 7])
            kk, flip = random_op(op_rng, raw.shape[0] == raw.shape[1])
            names = list(aligned)
            raw, outs = augment_sample(raw, [aligned[n] for n in names], kk, flip)
            aligned = dict(zip(names, outs))
        raw_t = torch.from_numpy(raw.astype(np.float32))
        item: dict[str, torch.Tensor] = {"raw": raw_t[None], "index": torch.tensor(si)}
        if self.pairing is not None:  # the target's slot in listing.rgb_pool (keys the real-feature cache)
            item["target_index"] = torch.tensor(int(self.pairing.target[k]))
        if self.spec is not None:
            item["input"] = self.spec.prepare_input(raw_t, self.preset)
        for name, a in aligned.items():
            item[name] = torch.from_numpy(_chw_float(a))
        own = item.pop("own", None)
        if own is not None:
            if self.with_paired_target:
                item["paired_target"] = own
            if paired:
                item["target"] = own  # the same tensor: converted once
        return item


def _references(raw_paths: list[Path], demosaicer: str, look: ReferenceLook, cache_dir, workers: int,
                progress: bool) -> ReferenceStore:
    """The reference store of these RAW files; a missing one is built by ``workers`` processes with a progress
    bar (terminal only) and one closing line on stderr."""
    DEMOSAICERS.get(demosaicer)  # a bad name fails before thousands of files are hashed
    key = content_key(raw_paths, demosaicer, look, None, cache_dir)
    store = open_store(key, cache_dir)
    if store is not None:
        return store
    bar = Progress(len(raw_paths), f"demosaicing references ({demosaicer})", unit="img", enabled=progress)
    t0 = time.perf_counter()
    try:
        store, built = build_store(raw_paths, demosaicer, look, None, cache_dir, local_map(workers), bar.update,
                                   key=key)
    finally:
        bar.close()
    if built:
        size = sum(f.stat().st_size for f in store.folder.iterdir())
        print(f"isp-search: built {len(raw_paths)} {demosaicer} references into {store.folder} "
              f"({size / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s, {workers} process(es))",
              file=sys.stderr, flush=True)
    return store
