"""Where an Optuna study is kept: a journal file (NFS-safe open-lock) or a database URL."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from isp_search.errors import UserError

# ``postgresql://`` alone means psycopg2 to SQLAlchemy; the driver we install is psycopg (3)
_PSYCOPG = ("postgresql://", "postgres://")


def rdb_url(url: str) -> str:
    """The SQLAlchemy URL of an RDB storage: ``postgresql://...`` opened through psycopg (3)."""
    for scheme in _PSYCOPG:
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def make_storage(url_or_path: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///...``, ``postgresql://...``) or a JournalStorage file (open-lock: NFS-safe)."""
    if "://" in url_or_path:
        url = rdb_url(url_or_path)
        try:
            return optuna.storages.RDBStorage(url)
        except OperationalError as e:  # server down, wrong host/port/database/user: the user's URL, not a bug
            reason = str(e.orig or e).strip().splitlines()[0]
            raise UserError(f"storage.optuna: cannot open {make_url(url_or_path).render_as_string(hide_password=True)}: "
                            f"{reason}; fix: start the database server or correct the URL") from None
    Path(url_or_path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(url_or_path, lock_obj=JournalFileOpenLock(url_or_path)))


def load_study(study_name: str, storage: str) -> optuna.Study:
    """Open a finished or running study (read-only use)."""
    if "://" not in storage and not os.path.exists(storage):
        raise FileNotFoundError(storage)
    return optuna.load_study(study_name=study_name, storage=make_storage(storage))
