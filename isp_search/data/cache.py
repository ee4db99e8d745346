"""On-disk cache of demosaiced references, shared by every run, trial and node that sees the cache folder.

A store is one folder ``<cache_dir>/<key>/`` holding ``data.u16`` (every reference, flattened, as uint16 =
round(x * 65535): half the size of float32 at more precision than the loss needs) and ``index.json`` (shapes and
offsets). The key hashes the RAW files' *content* (size and bytes, in order), the demosaicer, the look and the
output size: a copy of the data set at another path or on another node finds the same store. Hashing bytes reads
every file once, so the content key of a file list is memoised in ``<cache_dir>/.key-<stat key>`` by a cheap stat key
(resolved path, size, mtime) — a second look at the same files costs one ``stat`` each.

Builders hold an fcntl lock and build into a temporary folder that is renamed into place, so two processes
building the same store at once both end up reading one complete copy. ``build_store`` takes a ``map_chunks``
function so the references can be computed elsewhere (local processes by default; Ray tasks in
``isp_search.search.prepare``) while one process writes the store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from isp_search.data.demosaic import DEMOSAICERS, ReferenceLook, demosaic_reference
from isp_search.data.io import read_raw
from isp_search.filelock import exclusive_lock

FORMAT_VERSION = 2  # 2: content key (1 hashed path + mtime)
SCALE = 65535.0
DEFAULT_LOOK = ReferenceLook()  # frozen: one shared default
CHUNK = 16  # files per unit of parallel work: small enough for a progress bar, large enough to amortise a task

# (compute one chunk, chunks) -> each chunk's quantised references, in chunk order
MapChunks = Callable[[Callable[[Sequence[str]], list[np.ndarray]], list[list[str]]], Iterable[list[np.ndarray]]]


def default_cache_dir() -> Path:
    """``$ISP_SEARCH_CACHE`` or ``~/.cache/isp-search/references``."""
    env = os.environ.get("ISP_SEARCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "isp-search" / "references"


def file_digest(path: str | os.PathLike) -> str:
    """Size and BLAKE2b of the bytes of one file."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(block)
    return f"{os.path.getsize(path)}:{h.hexdigest()}"


def _settings(demosaicer: str, look: ReferenceLook, out_size: tuple[int, int] | None) -> bytes:
    return json.dumps({"v": FORMAT_VERSION, "demosaicer": demosaicer, "look": look.key(),
                       "out_size": list(out_size) if out_size else None}, sort_keys=True).encode()


def _stat_key(raw_paths: Sequence[str | os.PathLike]) -> str:
    h = hashlib.sha256()
    for p in raw_paths:
        st = os.stat(p)
        h.update(f"\n{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def files_key(raw_paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike | None = None) -> str:
    """The content hash of an ordered file list, memoised by its stat key in ``<cache_dir>/.key-<stat>``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    memo = root / f".key-{_stat_key(raw_paths)}"
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    for p in raw_paths:
        h.update(f"\n{file_digest(p)}".encode())
    key = h.hexdigest()[:32]
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
    tmp.write_text(key + "\n")
    os.replace(tmp, memo)
    return key


def content_key(raw_paths: Sequence[str | os.PathLike], demosaicer: str, look: ReferenceLook,
                out_size: tuple[int, int] | None, cache_dir: str | os.PathLike | None = None) -> str:
    """The store key: the files' content and every setting that changes a reference."""
    h = hashlib.sha256(_settings(demosaicer, look, out_size))
    h.update(files_key(raw_paths, cache_dir).encode())
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
        return (self.quantised(i).astype(np.float32) / np.float32(SCALE)).astype(np.float32)

    def quantised(self, i: int) -> np.ndarray:
        """Reference ``i`` as stored: a read-only uint16 (H, W, 3) view, x * 65535 (converted once, late)."""
        h, w = self.shapes[i]
        return self._data[self.offsets[i] : self.offsets[i + 1]].reshape(h, w, 3)  # type: ignore[index]

    def __getstate__(self) -> dict:  # DataLoader workers re-open the map instead of pickling it
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])  # type: ignore[misc]


def quantised_references(paths: Sequence[str], demosaicer: str, look: ReferenceLook,
                         out_size: tuple[int, int] | None) -> list[np.ndarray]:
    """One chunk of work: the uint16 references of ``paths`` (what a worker process or Ray task returns)."""
    out = []
    for p in paths:
        ref = demosaic_reference(read_raw(p), demosaicer, look, out_size)
        out.append(np.clip(np.rint(ref * SCALE), 0, SCALE).astype("<u2"))
    return out


def local_map(workers: int) -> MapChunks:
    """``map_chunks`` over ``workers`` local processes (in order); one worker computes in this process."""

    def run(fn: Callable, chunks: list[list[str]]) -> Iterator[list[np.ndarray]]:
        if workers <= 1 or len(chunks) <= 1:
            yield from map(fn, chunks)
            return
        with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
            yield from pool.map(fn, chunks)

    return run


def _write(folder: Path, chunks: Iterable[list[np.ndarray]], meta: dict, progress: Callable[[int], None] | None):
    shapes, offsets = [], [0]
    with open(folder / "data.u16", "wb") as out:
        for refs in chunks:
            for q in refs:
                out.write(q.tobytes())
                shapes.append(list(q.shape[:2]))
                offsets.append(offsets[-1] + int(q.size))
            if progress is not None:
                progress(len(refs))
    (folder / "index.json").write_text(json.dumps({"shapes": shapes, "offsets": offsets, "meta": meta}))


def open_store(key: str, cache_dir: str | os.PathLike | None = None) -> ReferenceStore | None:
    """The complete store ``key`` if it is there."""
    final = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / key
    return ReferenceStore(final) if (final / "index.json").is_file() else None


def build_store(raw_paths: Sequence[str | os.PathLike], demosaicer: str = "menon2007",
                look: ReferenceLook = DEFAULT_LOOK, out_size: tuple[int, int] | None = None,
                cache_dir: str | os.PathLike | None = None, map_chunks: MapChunks | None = None,
                progress: Callable[[int], None] | None = None, key: str | None = None) -> tuple[ReferenceStore, bool]:
    """The store of ``raw_paths``, built unless it exists; returns ``(store, built_here)``.

    ``map_chunks`` computes the chunks (default: this process); ``progress(n)`` is called as ``n`` more files are
    written (also with all of them at once when the store was already there).
    """
    DEMOSAICERS.get(demosaicer)  # fail on a bad name before hashing thousands of files
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = key or content_key(raw_paths, demosaicer, look, out_size, root)
    final = root / key
    done = open_store(key, root)
    if done is None:
        with exclusive_lock(root / f"{key}.lock"):
            done = open_store(key, root)  # another process may have built it while we waited
            if done is None:
                _build_locked(root, key, [str(p) for p in raw_paths], demosaicer, look, out_size,
                              map_chunks or local_map(1), progress)
                return ReferenceStore(final), True
    if progress is not None:
        progress(len(raw_paths))
    return done, False


def _build_locked(root: Path, key: str, paths: list[str], demosaicer: str, look: ReferenceLook,
                  out_size: tuple[int, int] | None, map_chunks: MapChunks, progress) -> None:
    for stale in root.glob(f".{key}.*"):  # left by a builder killed mid-way (we hold the lock now)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        meta = {"demosaicer": demosaicer, "look": look.key(), "out_size": out_size, "count": len(paths)}
        compute = functools.partial(quantised_references, demosaicer=demosaicer, look=look, out_size=out_size)
        chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
        _write(tmp, map_chunks(compute, chunks), meta, progress)
        try:
            os.rename(tmp, root / key)
        except OSError:  # a builder without the lock (e.g. lock-less file system) won the race
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def reference_store(
    raw_paths: Sequence[str | os.PathLike],
    demosaicer: str = "menon2007",
    look: ReferenceLook = DEFAULT_LOOK,
    out_size: tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
) -> ReferenceStore:
    """The references of ``raw_paths`` (in order), built once (``workers`` processes) and then read from the cache."""
    return build_store(raw_paths, demosaicer, look, out_size, cache_dir, local_map(workers))[0]
