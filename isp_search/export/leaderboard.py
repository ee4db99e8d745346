"""The leaderboard: a Parquet table with a declared schema, one row per exported model.

Appends are atomic: the new table is written to a temp file in the same folder and renamed over the old one,
under an exclusive ``fcntl`` lock on ``<table>.lock`` so concurrent writers (search drivers, trials) lose no row;
a writer killed mid-write leaves the previous table intact.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from isp_search.errors import UserError
from isp_search.filelock import exclusive_lock

DEFAULT_PATH = "results/leaderboard.parquet"

LATENCY = pa.struct([("target", pa.string()), ("runtime", pa.string()), ("median_ms", pa.float64()),
                     ("p10_ms", pa.float64()), ("p90_ms", pa.float64()), ("threads", pa.int32()),
                     ("device", pa.string()), ("delegate", pa.string()), ("size", pa.string())])

SCHEMA = pa.schema([
    ("model_id", pa.string()), ("created", pa.timestamp("ms", tz="UTC")), ("kind", pa.string()),
    ("backbone", pa.string()), ("mode", pa.string()), ("preset", pa.string()),
    ("search_id", pa.string()), ("trial_id", pa.string()), ("config", pa.string()),
    ("params", pa.int64()), ("macs", pa.int64()), ("macs_size", pa.string()),
    ("psnr", pa.float64()), ("ssim", pa.float64()), ("ms_ssim", pa.float64()), ("lpips", pa.float64()),
    ("dists", pa.float64()), ("n_test_images", pa.int64()), ("eval_split", pa.string()),
    ("lpips_weights", pa.string()), ("latency", pa.list_(LATENCY)), ("latency_ms", pa.float64()),
    ("latency_target", pa.string()), ("mai_score", pa.float64()), ("mai_c", pa.float64()),
    ("parity", pa.string()), ("artifacts", pa.map_(pa.string(), pa.string())),
    ("sha256", pa.map_(pa.string(), pa.string())), ("sample_crop", pa.string()), ("target_crop", pa.string()),
    ("git_sha", pa.string()), ("run_dir", pa.string()),
])


def default_path() -> Path:
    return Path(os.environ.get("ISP_SEARCH_LEADERBOARD", DEFAULT_PATH))


def git_sha(cwd: str | os.PathLike | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def mai_score(psnr: float | None, runtime_ms: float | None, c: float = 1.0) -> float | None:
    """MAI challenge score 2^(2 PSNR) / (C * runtime): +0.5 dB is worth a 2x slowdown."""
    if psnr is None or runtime_ms is None or runtime_ms <= 0:
        return None
    return float(2.0 ** (2.0 * psnr) / (c * runtime_ms))


def normalise_row(row: dict) -> dict:
    """Fill defaults and serialise free-form fields; unknown keys are an error (the schema is declared)."""
    unknown = set(row) - set(SCHEMA.names)
    if unknown:
        raise ValueError(f"leaderboard row has unknown columns {sorted(unknown)}")
    out = {name: row.get(name) for name in SCHEMA.names}
    out["created"] = out["created"] or datetime.now(timezone.utc)
    for key in ("config", "parity"):
        if out[key] is not None and not isinstance(out[key], str):
            out[key] = json.dumps(out[key], sort_keys=True, default=str)
    for key in ("artifacts", "sha256"):
        if isinstance(out[key], dict):
            out[key] = list(out[key].items())
    out["latency"] = out["latency"] or []
    if out["mai_score"] is None:  # rows written without publish() still get the score the table sorts by
        out["mai_c"] = 1.0 if out["mai_c"] is None else out["mai_c"]
        out["mai_score"] = mai_score(out["psnr"], out["latency_ms"], out["mai_c"])
    return out


def read(path: str | os.PathLike | None = None) -> pa.Table:
    """The whole table (empty with the schema when the file does not exist yet)."""
    p = Path(path) if path else default_path()
    if not p.exists():
        return SCHEMA.empty_table()
    try:
        return pq.read_table(p)
    except Exception as e:
        raise UserError(f"{p}: not a readable leaderboard Parquet file ({type(e).__name__})") from None


def append_rows(rows: list[dict], path: str | os.PathLike | None = None) -> Path:
    """Append rows atomically (lock, write temp, fsync, rename)."""
    p = Path(path) if path else default_path()
    new = pa.Table.from_pylist([normalise_row(r) for r in rows], schema=SCHEMA)
    with exclusive_lock(p.with_name(p.name + ".lock")):
        table = pa.concat_tables([read(p).cast(SCHEMA), new]) if p.exists() else new
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    return p


def pareto_front(rows: list[dict] | pa.Table, objectives: dict[str, str]) -> list[bool]:
    """Non-dominated flags for ``rows`` (dicts or a table from :func:`read`) under ``objectives``
    {column: 'min'|'max'}; rows missing a value are compared on the objectives they have."""
    if isinstance(rows, pa.Table):
        rows = rows.to_pylist()

    def better_or_equal(a, b, col, d):
        if a.get(col) is None or b.get(col) is None:
            return True
        return a[col] <= b[col] if d == "min" else a[col] >= b[col]

    def strictly(a, b, col, d):
        if a.get(col) is None or b.get(col) is None:
            return False
        return a[col] < b[col] if d == "min" else a[col] > b[col]

    flags = []
    for i, r in enumerate(rows):
        dominated = any(
            all(better_or_equal(o, r, c, d) for c, d in objectives.items())
            and any(strictly(o, r, c, d) for c, d in objectives.items())
            for j, o in enumerate(rows) if j != i
        )
        flags.append(not dominated)
    return flags


class Leaderboard:
    """One leaderboard file: ``Leaderboard(path).append(row)``, ``.read()``, ``.to_pandas()``."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else default_path()

    def append(self, row: dict) -> Path:
        return append_rows([row], self.path)

    def read(self) -> pa.Table:
        return read(self.path)

    def to_pandas(self):
        return self.read().to_pandas()
