"""The real-branch feature cache (``features.cache_real``): each image's real features computed once, then read.

With whole images and no augmentation the real branches' features are the same every time an image is drawn:
the content VGG on the demosaiced reference (or on the target, paired modes), the ViT on the blurred target, the
AlexNet trunk on the gray target. A :class:`RealCache` keeps them in memory-mapped files on local disk, one row
per image, filled the first time that image is drawn (computed on the whole batch exactly as without the cache)
and read from then on. Rows are keyed by the batch's ``index`` (RAW sample) or ``target_index`` (RGB pool slot).

Folder ``<root>/<key>/``: per branch a manifest ``<branch>.json`` (rows, dtypes, shapes, each file's size and a
``completed`` flag, written last), ``<branch>.filled`` (one byte per row) and ``<branch>.<j>.bin`` (output j of the
branch, rows × features); ``key.json`` says what the key was made of (preflight finds a built cache by it). The key
hashes the data set files (path, size, mtime), the reference settings, the frozen networks' weights, their input
mode and the compute dtype, so any change starts a new folder. Writers hold an exclusive fcntl lock, readers a
shared one, so trials sharing a folder never read a half-written row.

A partial or corrupt folder (a file without its manifest, a manifest without ``completed``, a file whose size is
not the manifest's) is never read: opening it removes its files, says so in one line, and it is filled again.
A search's prepare stage fills every row before the first trial (:mod:`isp_search.train.real_cache_build`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from isp_search.data.cache import default_cache_dir
from isp_search.data.demosaic import ReferenceLook
from isp_search.data.formats import get_format
from isp_search.errors import UserError

FORMAT_VERSION = 2  # 2: manifests with file sizes and a completed flag
IDENTITY = "key.json"  # what the folder's key was made of (not a branch)
CACHED_BRANCHES = ("content", "vit", "alex_gray")  # pyiqa's LPIPS/DISTS run both images inside; not cached
_STORE = {torch.float32: (np.float32, None), torch.float16: (np.float16, None),
          torch.bfloat16: (np.uint16, torch.uint16)}  # numpy has no bfloat16: its bits are kept as uint16

Features = torch.Tensor | tuple[torch.Tensor, ...]


def default_root() -> Path:
    """``$ISP_SEARCH_REAL_CACHE``, else ``real-features`` beside the reference cache folder."""

    env = os.environ.get("ISP_SEARCH_REAL_CACHE")
    return Path(env) if env else default_cache_dir().with_name("real-features")


class _Lock:
    """A shared/exclusive fcntl lock on one file, kept open for the cache's lifetime."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a+")

    def __call__(self, exclusive: bool) -> "_Lock":
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        return self

    def __enter__(self) -> None:
        fcntl.flock(self.fh, self.mode)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)


class RealCache:
    """Memory-mapped real features of one data set split; ``rows`` = images per key kind (sample, target)."""

    def __init__(self, folder: str | os.PathLike, rows: Mapping[str, int], device: str | torch.device = "cpu",
                 announce: bool = True) -> None:
        self.folder = Path(folder)
        self.device = torch.device(device)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows = dict(rows)
        self.announce = announce
        self.lock = _Lock(self.folder / ".lock")
        self._maps: dict[str, tuple[np.memmap, list[np.memmap], list[torch.dtype], bool]] = {}
        self.hits = self.misses = 0  # batches read from the cache / computed (tests, bench-train)
        self.rebuilt: str | None = None  # why this folder's files were removed on opening (None: they were sound)
        with self.lock(exclusive=True):
            why = folder_problem(self.folder)
            if why is not None:
                self._rebuild(why)

    def _rebuild(self, why: str) -> None:
        """Remove every file of a partial or corrupt folder (under the exclusive lock); it is filled again."""
        print(f"real-feature cache: {self.folder} is partial or corrupt ({why}); removed, rebuilding it",
              file=sys.stderr, flush=True)
        for p in self.folder.iterdir():
            if p.name != ".lock":
                p.unlink()
        self._maps.clear()
        self.rebuilt = why

    def __getstate__(self) -> dict:  # never shipped to workers; reopened where unpickled
        return {"folder": self.folder, "rows": self.rows, "device": str(self.device)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state["rows"], state["device"], announce=False)  # type: ignore[misc]

    def nbytes(self) -> int:
        """Bytes of the feature files created so far (their full size; the files are sparse until filled)."""
        return sum(m.nbytes for _, data, _, _ in self._maps.values() for m in data)

    def filled(self, branches: Collection[str]) -> bool:
        """Whether every row of each of ``branches`` is filled in sound files (read under the shared lock)."""
        with self.lock(exclusive=False):
            return all(fill_state(self.folder, b) == (self.rows_of(b), self.rows_of(b)) for b in branches)

    def rows_of(self, branch: str) -> int | None:
        """Rows of ``branch`` as its manifest says (None: not created yet)."""
        m = read_manifest(self.folder, branch)
        return None if m is None else int(m["rows"])

    def get(self, branch: str, kind: str, keys: torch.Tensor, compute: Callable[[], Features]) -> Features:
        """The real features of ``branch`` for the images ``keys`` (row ids of ``kind``): read when every row is
        filled, else ``compute()`` (the whole batch, as without a cache) and the missing rows stored."""
        idx = keys.detach().cpu().numpy().astype(np.int64).reshape(-1)
        with self.lock(exclusive=False):
            maps = self._maps.get(branch) or (self._open(branch) if branch_problem(self.folder, branch) is None
                                              else None)  # absent or broken: computed, and _store sees to it
            if maps is not None:
                filled, data, dtypes, is_tuple = maps
                if filled[idx].all():
                    rows = [torch.from_numpy(np.ascontiguousarray(m[idx])) for m in data]
                    self.hits += 1
                    return self._to_torch(rows, dtypes, is_tuple)
        feats = compute()
        self.misses += 1
        self._store(branch, kind, idx, feats)
        return feats

    def _to_torch(self, rows: list[torch.Tensor], dtypes: list[torch.dtype], is_tuple: bool) -> Features:
        out = [(r.view(dt) if r.dtype != dt else r).to(self.device, non_blocking=True) for r, dt in zip(rows, dtypes)]
        return tuple(out) if is_tuple else out[0]

    def _files(self, branch: str) -> tuple[Path, Path]:
        return self.folder / f"{branch}.json", self.folder / f"{branch}.filled"

    def _open(self, branch: str):
        """The maps of a sound branch (call :func:`branch_problem` first), or None when it has no manifest."""
        _, filled_path = self._files(branch)
        meta = read_manifest(self.folder, branch)
        if meta is None:
            return None
        data = [np.memmap(self.folder / f"{branch}.{j}.bin", dtype=np.dtype(o["np"]), mode="r+",
                          shape=tuple(o["shape"])) for j, o in enumerate(meta["outputs"])]
        filled = np.memmap(filled_path, dtype=np.uint8, mode="r+", shape=(meta["rows"],))
        dtypes = [getattr(torch, o["torch"]) for o in meta["outputs"]]
        self._maps[branch] = (filled, data, dtypes, bool(meta["tuple"]))
        return self._maps[branch]

    def _create(self, branch: str, kind: str, feats: tuple[torch.Tensor, ...], is_tuple: bool) -> None:
        """Allocate the (sparse) files of ``branch`` from one batch's features; prints the size once."""
        n = self.rows[kind]
        outputs = []
        for j, f in enumerate(feats):
            np_dt, _ = _STORE[f.dtype]
            shape = [n, *f.shape[1:]]
            outputs.append({"np": np.dtype(np_dt).name, "torch": str(f.dtype).removeprefix("torch."),
                            "shape": shape, "file": f"{branch}.{j}.bin",
                            "bytes": int(np.prod(shape)) * np.dtype(np_dt).itemsize})
        need = sum(o["bytes"] for o in outputs)
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise UserError(f"features.cache_real: the {branch} features of {n} images need {need / 2**30:.2f} GiB, "
                            f"only {free / 2**30:.2f} GiB free in {self.folder}; free space, set "
                            "ISP_SEARCH_REAL_CACHE to another disk, or set features.cache_real: false")
        manifest = {"v": FORMAT_VERSION, "rows": n, "kind": kind, "tuple": is_tuple, "outputs": outputs,
                    "completed": False}
        _write_json(self._files(branch)[0], manifest)  # first: files without a completed manifest are partial
        for o in outputs:
            np.memmap(self.folder / o["file"], dtype=np.dtype(o["np"]), mode="w+", shape=tuple(o["shape"]))
        np.memmap(self._files(branch)[1], dtype=np.uint8, mode="w+", shape=(n,))
        _write_json(self._files(branch)[0], {**manifest, "completed": True})  # the flag last
        if self.announce:
            print(f"real-feature cache: {branch}, {n} images x {need / n / 2**20:.2f} MiB = {need / 2**30:.3f} GiB "
                  f"in {self.folder}", file=sys.stderr)

    def _store(self, branch: str, kind: str, idx: np.ndarray, feats: Features) -> None:
        is_tuple = isinstance(feats, tuple)
        parts = tuple(feats) if is_tuple else (feats,)
        with self.lock(exclusive=True):
            maps = self._maps.get(branch)
            if maps is None and (why := branch_problem(self.folder, branch)) not in (None, ABSENT):
                self._rebuild(why)  # broken since this cache was opened (another process's crash, a full disk)
            maps = maps or self._open(branch)
            if maps is None:
                self._create(branch, kind, parts, is_tuple)
                maps = self._open(branch)
            filled, data, _, _ = maps
            todo = [i for i, k in enumerate(idx) if not filled[k]]
            if not todo:
                return
            rows = idx[todo]
            for m, f in zip(data, parts):
                _, view = _STORE[f.dtype]
                f = f.detach()[todo].cpu()
                m[rows] = (f.view(view) if view is not None else f).numpy()
            filled[rows] = 1  # after the rows: a reader never sees a flag before its data


ABSENT = "absent"  # branch_problem: the branch has no files at all (not a problem: it is created when needed)


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def read_manifest(folder: str | os.PathLike, branch: str) -> dict | None:
    """The manifest of ``branch`` in ``folder`` (None when missing or unreadable)."""
    try:
        return json.loads((Path(folder) / f"{branch}.json").read_text())
    except (OSError, ValueError):
        return None


def branch_problem(folder: str | os.PathLike, branch: str) -> str | None:
    """Why the files of ``branch`` cannot be read (partial or corrupt), :data:`ABSENT` when it has none, else None.

    Sound: a manifest of this format with ``completed``, and every file at the size it says."""
    folder = Path(folder)
    files = [p for p in folder.glob(f"{branch}.*") if p.name != f"{branch}.json"]
    meta = read_manifest(folder, branch)
    if meta is None:
        if (folder / f"{branch}.json").exists():
            return f"{branch}.json is unreadable"
        return f"{branch} has files but no manifest" if files else ABSENT
    if meta.get("v") != FORMAT_VERSION:
        return f"{branch}.json is format {meta.get('v')}, not {FORMAT_VERSION}"
    if meta.get("completed") is not True:
        return f"{branch}.json is not completed (its writer stopped while creating the files)"
    want = {o["file"]: o["bytes"] for o in meta["outputs"]} | {f"{branch}.filled": meta["rows"]}
    for name, size in want.items():
        p = folder / name
        have = p.stat().st_size if p.is_file() else None
        if have != size:
            return f"{name} is {'missing' if have is None else f'{have} bytes'}, its manifest says {size}"
    return None


def folder_problem(folder: str | os.PathLike) -> str | None:
    """The first problem of any branch in ``folder`` (see :func:`branch_problem`), else None."""
    names = {p.name.split(".", 1)[0] for p in Path(folder).iterdir()
             if not p.name.startswith(".") and p.name != IDENTITY and not p.name.endswith(".tmp")}
    for branch in sorted(names):
        why = branch_problem(folder, branch)
        if why not in (None, ABSENT):
            return why
    return None


def fill_state(folder: str | os.PathLike, branch: str) -> tuple[int, int | None]:
    """(rows filled, rows) of a sound ``branch`` in ``folder``; (0, None) when it is absent or broken."""
    meta = read_manifest(folder, branch)
    if meta is None or branch_problem(folder, branch) is not None:
        return 0, None
    filled = np.fromfile(Path(folder) / f"{branch}.filled", dtype=np.uint8)
    return int(filled.sum()), int(meta["rows"])


def fingerprint(nets: torch.nn.Module) -> str:
    """A hash of every frozen weight and buffer (the same networks give the same features)."""
    h = hashlib.sha256()
    for name, t in sorted(nets.state_dict().items()):
        a = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}".encode())
        h.update(a.view(torch.uint8).numpy().data if a.numel() else b"")
    return h.hexdigest()[:16]


def data_digest(listing: Any) -> str:
    """A hash of a split's files (path, size, mtime): its RAW samples, then its photo pool, in order."""
    h = hashlib.sha256()
    for p in [s.raw_path for s in listing.samples] + list(listing.rgb_pool):
        st = os.stat(p)
        h.update(f"\n{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_settings(cfg: Any, dtype: str) -> dict[str, Any]:
    """Everything of ``cfg`` that changes a real feature (with ``dtype``, the frozen networks' compute dtype)."""
    d = cfg.data
    return {"format": get_format(d.format).name, "demosaicer": d.demosaicer, "look": ReferenceLook().key(),
            "patch": d.patch_size, "content_lab": cfg.content_lab, "content_ref": cfg.content_vs_reference,
            "input": cfg.features.input, "vit": cfg.features.vit_img_size, "weights": cfg.backbone_weights,
            "dtype": dtype, "pairing": cfg.pairing}


def cache_key(ds: Any, settings: Mapping[str, Any], nets: torch.nn.Module) -> str:
    """The folder name of a split's real features: its files, the data settings and the networks."""
    return hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **settings, "nets": fingerprint(nets),
                                      "data": data_digest(ds.listing)}, sort_keys=True, default=str).encode()
                          ).hexdigest()[:24]


def find_built(root: str | os.PathLike, settings: Mapping[str, Any], digest: str) -> Path | None:
    """A folder under ``root`` made for ``settings`` and the data ``digest`` (by its ``key.json``), or None.

    Without the networks' fingerprint (it needs their weights loaded): preflight's guess of what is there."""
    root = Path(root)
    want = json.loads(json.dumps(dict(settings), default=str))
    for f in sorted(root.glob(f"*/{IDENTITY}")) if root.is_dir() else ():
        try:
            ident = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if ident.get("settings") == want and ident.get("data") == digest and ident.get("v") == FORMAT_VERSION:
            return f.parent
    return None


def varying_real_images(cfg: Any, ds: Any) -> str | None:
    """Why the real images of ``ds`` change from draw to draw (so their features cannot be cached), or None.

    Random patches and augmentation change them; so do unpaired targets, fitted to each RAW's size by a random
    crop unless every photo already has that size."""
    if cfg.data.augment:
        return "data.augment is true"
    if cfg.data.patch_size is not None:
        return f"data.patch_size is {cfg.data.patch_size} (random crops)"
    if ds.pairing_mode == "paired" or ds.references is None:
        return None
    sizes = {tuple(s) for s in ds.references.shapes}
    for p in ds.listing.rgb_pool:
        with Image.open(p) as im:  # reads the header only
            hw = (im.height, im.width)
        if len(sizes) != 1 or hw not in sizes:
            return (f"photo {p} is {hw[0]}x{hw[1]} but the RAW outputs are {sorted(sizes)}: its crop is random")
    return None


def open_real_cache(cfg: Any, ds: Any, nets: torch.nn.Module, device: torch.device, dtype: str,
                    root: str | os.PathLike | None = None) -> RealCache | None:
    """The real-feature cache of training split ``ds`` under ``cfg`` (None when ``features.cache_real`` is off, or
    auto where the real images vary).
    ``dtype``: the frozen networks' compute dtype (float32, or bfloat16 under autocast)."""
    mode = cfg.features.cache_real
    if mode is False:
        return None
    why = varying_real_images(cfg, ds)
    if why and mode is True:
        raise UserError(f"features.cache_real: {why}, so the real features are not fixed; "
                        "set features.cache_real: false (or auto)")
    if mode == "auto":
        print(f"isp-search: features.cache_real auto: {'off, ' + why if why else 'on (whole, unaugmented images)'}",
              file=sys.stderr, flush=True)
        if why:
            return None
    settings = cache_settings(cfg, dtype)
    folder = Path(root) if root is not None else default_root()
    rows = {"sample": len(ds.listing.samples), "target": len(ds.listing.rgb_pool)}
    cache = RealCache(folder / cache_key(ds, settings, nets), rows, device)
    ident = cache.folder / IDENTITY
    if not ident.is_file():
        _write_json(ident, json.loads(json.dumps({"v": FORMAT_VERSION, "settings": settings, "rows": rows,
                                                  "data": data_digest(ds.listing), "nets": fingerprint(nets)},
                                                 default=str)))
    return cache
