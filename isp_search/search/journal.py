"""The Optuna journal of an object-store experiment: written on the driver's disk, mirrored into storage.

A JournalStorage file needs a file system with locks, which ``s3://`` is not, so the driver keeps the journal
locally (``~/.cache/isp-search/optuna/<name>.journal``) and copies it to ``<storage>/<name>/optuna.journal``
after every finished trial and at the end (:func:`push`). ``--resume`` on any machine restores it from there
first when the local copy is missing or shorter (:func:`pull`): a journal only grows, so the longer one is newer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pyarrow import fs as pafs

log = logging.getLogger(__name__)

MIRROR_NAME = "optuna.journal"


def mirror_uri(storage_path: str, experiment: str, optuna_storage: str) -> str | None:
    """``<storage>/<name>/optuna.journal`` when the study is a local journal of an object-store experiment."""
    if "://" not in storage_path or "://" in optuna_storage:
        return None
    return f"{storage_path.rstrip('/')}/{experiment}/{MIRROR_NAME}"


def _size(fs, path: str) -> int:
    info = fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else -1


def push(local: str, uri: str | None) -> bool:
    """Copy the local journal to ``uri`` (no-op without a mirror); a failed upload is logged, never fatal."""
    if not uri or not os.path.isfile(local):
        return False

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with open(local, "rb") as src, fs.open_output_stream(path) as dst:
            dst.write(src.read())
        return True
    except OSError as e:  # the next push (after the next trial, or at the end) tries again
        log.warning("could not copy the Optuna journal to %s: %s", uri, e)
        return False


def pull(local: str, uri: str | None) -> bool:
    """Restore the local journal from ``uri`` when the mirror is longer (or the local copy is missing)."""
    if not uri:
        return False

    fs, path = pafs.FileSystem.from_uri(uri)
    remote = _size(fs, path)
    if remote <= 0 or remote <= (os.path.getsize(local) if os.path.isfile(local) else -1):
        return False
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{local}.part"
    with fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.replace(tmp, local)
    log.info("restored the Optuna journal %s from %s", local, uri)
    return True
