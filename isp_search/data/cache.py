"""On-disk cache of demosaiced references, shared by every run and trial on the machine.

A store is one folder ``<cache_dir>/<key>/`` holding ``data.u16`` (every reference, flattened, as uint16 =
round(x * 65535): half the size of float32 at more precision than the loss needs) and ``index.json`` (shapes and
offsets). The key hashes the RAW files (path, size, mtime), the demosaicer, the look and the output size, so a
changed file or setting builds a new store. Builders hold an fcntl lock and build into a temporary folder that is
renamed into place, so two processes building the same store at once both end up reading one complete copy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from isp_search.data.demosaic import DEMOSAICERS, ReferenceLook, demosaic_reference
from isp_search.data.io import read_raw
from isp_search.filelock import exclusive_lock

FORMAT_VERSION = 1
SCALE = 65535.0


def default_cache_dir() -> Path:
    """``$ISP_SEARCH_CACHE`` or ``~/.cache/isp-search/references``."""
    env = os.environ.get("ISP_SEARCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "isp-search" / "references"


def content_key(
    raw_paths: Sequence[str | os.PathLike], demosaicer: str, look: ReferenceLook, out_size: tuple[int, int] | None
) -> str:
    """A hash of the files (resolved path, size, mtime) and every setting that changes a reference."""
    h = hashlib.sha256()
    settings = {"v": FORMAT_VERSION, "demosaicer": demosaicer, "look": look.key(), "out_size": out_size}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for p in raw_paths:
        st = os.stat(p)
        h.update(f"\n{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


class ReferenceStore:
    """Read-only, memory-mapped references: ``store[i]`` -> float32 (H, W, 3) in [0, 1]."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        self.shapes = [tuple(s) for s in index["shapes"]]
        self.offsets = index["offsets"]
        self.meta = index["meta"]
        self._data = np.memmap(self.folder / "data.u16", dtype=np.uint16, mode="r") if self.offsets[-1] else None

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        h, w = self.shapes[i]
        flat = self._data[self.offsets[i] : self.offsets[i + 1]]  # type: ignore[index]
        return (flat.reshape(h, w, 3).astype(np.float32) / np.float32(SCALE)).astype(np.float32)

    def __getstate__(self) -> dict:  # DataLoader workers re-open the map instead of pickling it
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])  # type: ignore[misc]


def _reference_of(path: str, demosaicer: str, look: ReferenceLook, out_size: tuple[int, int] | None) -> np.ndarray:
    return demosaic_reference(read_raw(path), demosaicer, look, out_size)


def _build(folder: Path, refs: Iterable[np.ndarray], meta: dict) -> None:
    shapes, offsets = [], [0]
    with open(folder / "data.u16", "wb") as out:
        for ref in refs:
            q = np.clip(np.rint(ref * SCALE), 0, SCALE).astype("<u2")
            out.write(q.tobytes())
            shapes.append(list(ref.shape[:2]))
            offsets.append(offsets[-1] + int(q.size))
    (folder / "index.json").write_text(json.dumps({"shapes": shapes, "offsets": offsets, "meta": meta}))


def reference_store(
    raw_paths: Sequence[str | os.PathLike],
    demosaicer: str = "menon2007",
    look: ReferenceLook = ReferenceLook(),
    out_size: tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
) -> ReferenceStore:
    """The references of ``raw_paths`` (in order), built once (``workers`` processes) and then read from the cache."""
    DEMOSAICERS.get(demosaicer)  # fail on a bad name before hashing thousands of files
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = content_key(raw_paths, demosaicer, look, out_size)
    final = root / key
    if (final / "index.json").is_file():
        return ReferenceStore(final)
    with exclusive_lock(root / f"{key}.lock"):
        if (final / "index.json").is_file():  # another process built it while we waited
            return ReferenceStore(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            meta = {"demosaicer": demosaicer, "look": look.key(), "out_size": out_size, "count": len(raw_paths)}
            compute = functools.partial(_reference_of, demosaicer=demosaicer, look=look, out_size=out_size)
            if workers > 1 and len(raw_paths) > 1:
                with ProcessPoolExecutor(min(workers, len(raw_paths))) as pool:
                    _build(tmp, pool.map(compute, raw_paths, chunksize=8), meta)
            else:
                _build(tmp, map(compute, raw_paths), meta)
            try:
                os.rename(tmp, final)
            except OSError:  # a builder without the lock (e.g. lock-less file system) won the race
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ReferenceStore(final)
