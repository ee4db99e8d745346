"""Where one study lives, and its small records.

Layout of one experiment (``<storage>/<name>/``): Ray's experiment state and trial folders (each with its
checkpoints, ``result.json`` and TensorBoard events), ``optuna.journal`` (the Optuna study; open it with
``optuna-dashboard``), ``isp_search.json`` (study name and storage, read back by ``--resume``) and one JSON record
per finished stage (``prepare.json``, ``pretrain.json``). Paths may be local, NFS or object-store URIs: every
read and write goes through ``pyarrow.fs``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs

from isp_search.errors import UserError
from isp_search.search.journal import mirror_uri
from isp_search.search.space import SearchSpace

META_FILE = "isp_search.json"
TUNER_STATE = "tuner.pkl"  # written by Ray as the search starts (what ``Tuner.can_restore`` looks for)


@dataclass(frozen=True)
class Experiment:
    """Where one study lives."""

    name: str
    storage: str  # storage root (local path or URI)
    study_name: str
    optuna_storage: str  # journal file path or RDB URL

    @property
    def uri(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The file system and path of a local path (relative: to the working directory) or URI."""
    return pyarrow.fs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))


def read_json(uri: str) -> dict | None:
    """A JSON record, or None when it is not there (yet)."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        return None


def write_json(uri: str, doc: dict[str, Any]) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(doc, indent=1).encode())


def write_meta(exp: Experiment, space: SearchSpace) -> None:
    """``isp_search.json``: what ``--resume`` reads back to find the Optuna study."""
    write_json(f"{exp.uri}/{META_FILE}", {
        "name": exp.name, "study_name": exp.study_name, "optuna_storage": exp.optuna_storage,
        "space": space.source, "objectives": [[o.metric, o.direction] for o in space.objectives],
        "sampler": space.search.sampler, "max_concurrent": space.search.max_concurrent,
        "created": time.strftime("%Y-%m-%d %H:%M:%S")})


def read_meta(uri: str) -> dict:
    meta = read_json(f"{uri}/{META_FILE}")
    if meta is None:
        raise UserError(f"{uri}: not an isp-search experiment (no {META_FILE}); check --name and --storage")
    return meta


def new_experiment(space: SearchSpace, name: str | None) -> Experiment:
    """A fresh experiment name (given or ``<space>-<time>``) and a unique study name; a name already taken under
    the storage path is refused (a second submit of the same command must not start a second study there)."""
    name = name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    study = f"{name}-{uuid.uuid4().hex[:8]}"
    uri = f"{space.storage.path.rstrip('/')}/{name}"
    if read_json(f"{uri}/{META_FILE}") is not None:
        raise UserError(f"experiment {name!r} exists already in {space.storage.path}: add --resume to continue it, "
                        "or choose another --name (nothing was started)")
    if space.storage.optuna:
        optuna_storage = space.storage.optuna
    elif "://" in space.storage.path:  # object stores cannot hold a journal file: keep it on the driver
        optuna_storage = str(Path.home() / ".cache" / "isp-search" / "optuna" / f"{name}.journal")
    else:
        optuna_storage = str(Path(uri) / "optuna.journal")
    return Experiment(name, space.storage.path, study, optuna_storage)


def find_experiment(space: SearchSpace, name: str | None) -> Experiment:
    """The experiment to resume: ``name``, or the newest ``<space>-*`` under the storage root."""
    root = space.storage.path
    if name is None:
        if "://" in root:
            raise UserError("--resume with an object-store storage needs --name")
        found = sorted((p for p in Path(root).glob(f"{space.name}-*") if (p / META_FILE).is_file()),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"--resume: no experiment of {space.name!r} under {root}; start one without --resume")
        name = found[-1].name
    meta = read_meta(f"{root.rstrip('/')}/{name}")
    exp = Experiment(name, root, meta["study_name"], meta["optuna_storage"])
    check_journal(exp)
    return exp


def _is_file(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def check_journal(exp: Experiment) -> None:
    """Refuse to resume a search whose Optuna journal is gone: its trials' results could not be read back (and Ray
    would re-run what Optuna no longer knows). A search cut off before its first trial has no journal yet."""
    local = exp.optuna_storage
    if "://" in local or Path(local).is_file():  # a database URL, or the journal is there
        return
    mirror = mirror_uri(exp.storage, exp.name, local)
    if (mirror and _is_file(mirror)) or not _is_file(f"{exp.uri}/{TUNER_STATE}"):
        return  # restored from its object-store copy on resume, or no trial was ever started
    here = f"{exp.uri}/optuna.journal"
    moved = (f"; a journal is at {here}: if the experiment folder was moved, set optuna_storage in "
             f"{exp.uri}/{META_FILE} to it" if "://" not in here and here != local and Path(here).is_file() else "")
    raise UserError(f"--resume: {local}: the Optuna journal of experiment {exp.name!r} is missing (deleted, moved, "
                    "or on a folder not mounted here), so its trials' results cannot be read back; put the file "
                    f"back there, or start again without --resume under a new --name{moved} (nothing was started)")
