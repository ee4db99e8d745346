"""Where an Optuna study is kept: a journal file (NFS-safe open-lock) or a database URL."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock


def make_storage(url_or_path: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///...``, ``postgresql://...``) or a JournalStorage file (open-lock: NFS-safe)."""
    if "://" in url_or_path:
        return optuna.storages.RDBStorage(url_or_path)
    Path(url_or_path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url_or_path, lock_obj=JournalFileOpenLock(url_or_path)))


def load_study(study_name: str, storage: str) -> optuna.Study:
    """Open a finished or running study (read-only use)."""
    if "://" not in storage and not os.path.exists(storage):
        raise FileNotFoundError(storage)
    return optuna.load_study(study_name=study_name, storage=make_storage(storage))
