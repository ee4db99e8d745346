"""Decoded RAW mosaics and RGB photos of a split packed into memory-mapped arrays, beside the reference cache.

Decoding a PNG costs milliseconds (a 256² item ~6–8 ms with its photos, a 448² one ~15 ms); reading the same pixels
from a memory-mapped file costs a copy. A pack is one folder ``<cache_dir>/packed-<key>/`` holding ``raw.u16``
(every mosaic, flattened), ``rgb.u8`` / ``rgb.u16`` (every photo in RGB order, at the file's own bit depth) and
``index.json`` (file, offset and shape of each image, in the order of the file lists it was built from). Items read from a pack are byte-identical to items decoded from the
files: the pack stores exactly what :func:`~isp_search.data.io.read_raw` and
:func:`~isp_search.data.io.decode_rgb` return, and the same :func:`~isp_search.data.io.rgb_to_float` converts both.

The key hashes the files' content (the reference cache's :func:`~isp_search.data.cache.files_key`), so a copy of
the data set elsewhere finds the same pack. Like the reference cache, a builder holds a lock and renames a complete
temporary folder into place. Size on disk: about 2 bytes per RAW pixel + 3 per 8-bit RGB pixel (MAI 2022 train at
256²: ~0.32 MB per pair).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from isp_search.data.cache import default_cache_dir, files_key
from isp_search.data.io import decode_rgb, read_raw
from isp_search.filelock import exclusive_lock
from isp_search.progress import Progress

FORMAT_VERSION = 1
PREFIX = "packed-"
CHUNK = 32  # files per unit of parallel work
ALIGN = 64  # byte alignment of every array in its file


def pack_key(raw_paths: Sequence[str | os.PathLike], rgb_paths: Sequence[str | os.PathLike],
             cache_dir: str | os.PathLike | None = None) -> str:
    """The pack key: the content of the RAW and of the RGB file lists, and the pack format."""
    h = hashlib.sha256(f"packed v{FORMAT_VERSION}".encode())
    for paths in (raw_paths, rgb_paths):
        h.update(b"\n" + (files_key(paths, cache_dir).encode() if paths else b"-"))
    return h.hexdigest()[:24]


class PackedImages:
    """Read-only decoded images by position in the file lists the pack was built from: ``raw(i)`` -> uint16
    (H, W), ``rgb(j)`` -> uint8/16 (H, W, 3). Positions, not paths: the key is the content of the ordered lists,
    so a copy of the data set at another path opens the same pack.

    Both return views of the memory map (no copy); callers convert (which copies) before anything writes.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        self.meta = index["meta"]
        self._entries: dict[str, list[tuple[str, int, tuple[int, ...]]]] = {
            kind: [(f, o, tuple(s)) for f, o, s in index[kind]] for kind in ("raw", "rgb")}
        self._maps: dict[str, np.memmap] = {}
        for name, dtype in index["files"].items():
            if (self.folder / name).stat().st_size:
                self._maps[name] = np.memmap(self.folder / name, dtype=np.dtype(dtype), mode="r")

    def _get(self, kind: str, i: int) -> np.ndarray:
        name, offset, shape = self._entries[kind][i]
        return self._maps[name][offset : offset + int(np.prod(shape))].reshape(shape)

    def raw(self, i: int) -> np.ndarray:
        return self._get("raw", i)

    def rgb(self, j: int) -> np.ndarray:
        return self._get("rgb", j)

    def __len__(self) -> int:
        return len(self._entries["raw"]) + len(self._entries["rgb"])

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self._maps.values())

    def __getstate__(self) -> dict:  # DataLoader workers re-open the maps instead of pickling them
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])  # type: ignore[misc]


def _decode_chunk(job: tuple[str, list[str]]) -> list[np.ndarray]:
    kind, paths = job
    return [read_raw(p) if kind == "raw" else decode_rgb(p) for p in paths]


def _chunks(raw_paths: list[str], rgb_paths: list[str], workers: int) -> Iterator[tuple[str, list[str], list]]:
    jobs = [("raw", raw_paths[i : i + CHUNK]) for i in range(0, len(raw_paths), CHUNK)]
    jobs += [("rgb", rgb_paths[i : i + CHUNK]) for i in range(0, len(rgb_paths), CHUNK)]
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job[0], job[1], _decode_chunk(job)
        return
    with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
        for job, arrays in zip(jobs, pool.map(_decode_chunk, jobs)):
            yield job[0], job[1], arrays


def _write(folder: Path, chunks: Iterable[tuple[str, list[str], list[np.ndarray]]], meta: dict,
           progress: Callable[[int], None] | None) -> None:
    index: dict = {"raw": [], "rgb": [], "files": {}, "meta": meta}
    outs: dict[str, object] = {}
    try:
        for kind, paths, arrays in chunks:
            for a in arrays:
                dtype = a.dtype.newbyteorder("<")
                name = f"{kind}.u{dtype.itemsize * 8}"  # raw.u16, rgb.u8, rgb.u16
                if name not in outs:
                    outs[name] = open(folder / name, "wb")  # noqa: SIM115  (closed in the finally below)
                    index["files"][name] = dtype.str
                f = outs[name]
                pos = f.tell()  # type: ignore[attr-defined]
                pad = -pos % ALIGN
                f.write(b"\0" * pad + np.ascontiguousarray(a, dtype=dtype).tobytes())  # type: ignore[attr-defined]
                index[kind].append([name, (pos + pad) // dtype.itemsize, list(a.shape)])
            if progress is not None:
                progress(len(paths))
    finally:
        for f in outs.values():
            f.close()  # type: ignore[attr-defined]
    (folder / "index.json").write_text(json.dumps(index))


def open_pack(raw_paths: Sequence[str | os.PathLike], rgb_paths: Sequence[str | os.PathLike],
              cache_dir: str | os.PathLike | None = None) -> PackedImages | None:
    """The complete pack of these files if one is there (nothing is built)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"{PREFIX}{pack_key(raw_paths, rgb_paths, root)}"
    return PackedImages(folder) if (folder / "index.json").is_file() else None


def build_pack(raw_paths: Sequence[str | os.PathLike], rgb_paths: Sequence[str | os.PathLike],
               cache_dir: str | os.PathLike | None = None, workers: int = 1, show_progress: bool = True,
               ) -> tuple[PackedImages, bool]:
    """The pack of these files, built (``workers`` processes) unless it exists; returns ``(pack, built_here)``.

    A build draws a progress bar on a terminal and always ends with one line on stderr: count, size, time, folder.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    raw = [str(p) for p in raw_paths]
    rgb = [str(p) for p in rgb_paths]
    key = pack_key(raw, rgb, root)
    final = root / f"{PREFIX}{key}"
    if (final / "index.json").is_file():
        return PackedImages(final), False
    with exclusive_lock(root / f"{PREFIX}{key}.lock"):
        if (final / "index.json").is_file():  # another process built it while we waited
            return PackedImages(final), False
        tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}{key}.", dir=root))
        t0 = time.perf_counter()
        bar = Progress(len(raw) + len(rgb), "packing images", unit="img", enabled=show_progress)
        try:
            meta = {"v": FORMAT_VERSION, "raw": len(raw), "rgb": len(rgb)}
            _write(tmp, _chunks(raw, rgb, workers), meta, bar.update)
            try:
                os.rename(tmp, final)
            except OSError:  # a builder without the lock (lock-less file system) won the race
                pass
        finally:
            bar.close()
            shutil.rmtree(tmp, ignore_errors=True)
    pack = PackedImages(final)
    print(f"isp-search: packed {len(raw)} RAW + {len(rgb)} RGB images into {final} "
          f"({pack.nbytes / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return pack, True

