"""The leaderboard: a Parquet table with a declared schema, one row per exported model.

Appends are atomic: the new table is written to a temp file in the same folder and renamed over the old one,
under an exclusive ``fcntl`` lock on ``<table>.lock`` so concurrent writers (search drivers, trials) lose no row;
a writer killed mid-write leaves the previous table intact. A table written with an older schema is read into
this one (columns it lacks are empty).

Columns (every quality number has its data set beside it; every latency says where it was measured):

* identity: ``model_id``, ``created``, ``kind`` (search | baseline), ``backbone``, ``mode``, ``preset``,
  ``search_id``, ``trial_id``, ``config`` (JSON of the trial's parameters), ``run_dir``, ``git_sha`` and
  ``code_sha256`` (the package's source files: the code identity where there is no git, :mod:`isp_search.provenance`).
* size: ``params``; ``macs`` and ``macs_size`` (HxW the MACs were counted at).
* quality: ``psnr``, ``ssim``, ``ms_ssim``, ``lpips``, ``dists``, ``lpips_weights`` (pretrained | random feature
  networks); measured on ``data_format`` / ``data_root`` / ``eval_split`` with ``n_test_images`` images whose RAW
  file list hashes to ``data_fingerprint`` (first 16 hex of a sha256 over the sorted relative names).
* deployed files (the Full-HD export that was gated and timed): ``artifacts`` (format -> absolute path),
  ``sha256`` (format -> hex digest), ``artifact_bytes`` (format -> bytes), ``deploy_size`` (HxW of those files) and ``gate_size`` (HxW of the extra gate-only export, if any),
  ``weights_sha256`` (the generator's weights: one row per deployed weights and size) and ``same_weights_as``
  (the other model ids, e.g. search trials, whose exported weights were these: not given rows of their own).
* seeds: ``n_seeds``, ``seed_mean`` and ``seed_sd`` (keys ``val/lpips``, ``test/psnr``, ...): the configuration's
  values over its training seeds, for a search's confirmed models (empty: one run).
* parity of those files against PyTorch (clamped outputs): ``parity`` = list of {format, kind (random at the
  export size | real held-out patches), psnr_db, max_lsb (8-bit steps), max_abs, passed, blocking,
  quality_drop_db (int8: PSNR lost against the targets)}; ``parity_min_psnr_db`` / ``parity_max_lsb`` = the worst
  over the blocking (fp32/fp16/ONNX) gates; ``int8_psnr_db`` / ``int8_quality_drop_db`` when int8 was exported.
* latency: ``latency`` = list of entries (see LATENCY: target cpu | adb[:SERIAL] | qai-hub:DEVICE, runtime,
  delegate, precision, device, soc, host_cpu, threads, delegated_nodes "done/total", fully_delegated,
  init_ms, first_ms, median_ms, mean_ms, p10/p90/std/min/max_ms, runs, statistic (median | mean | estimate),
  size, model file and its sha256); ``latency_ms`` / ``latency_target`` / ``latency_statistic`` = the primary
  entry (a phone or device cloud when measured, else this CPU).
* ``mai_score`` = 2^(2 PSNR) / (``mai_c`` x runtime) only from a mobile target, named in ``mai_target``.
* ``sample_crop`` / ``target_crop``: PNG crops of the first test image.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from isp_search.errors import UserError
from isp_search.filelock import exclusive_lock

DEFAULT_PATH = "results/leaderboard.parquet"

LATENCY = pa.struct([
    ("target", pa.string()), ("runtime", pa.string()), ("delegate", pa.string()), ("precision", pa.string()),
    ("device", pa.string()), ("soc", pa.string()), ("host_cpu", pa.string()), ("threads", pa.int32()),
    ("delegated_nodes", pa.string()), ("fully_delegated", pa.bool_()), ("compute_units", pa.string()),
    ("init_ms", pa.float64()), ("first_ms", pa.float64()), ("median_ms", pa.float64()), ("mean_ms", pa.float64()),
    ("p10_ms", pa.float64()), ("p90_ms", pa.float64()), ("std_ms", pa.float64()), ("min_ms", pa.float64()),
    ("max_ms", pa.float64()), ("runs", pa.int32()), ("statistic", pa.string()), ("size", pa.string()),
    ("model", pa.string()), ("sha256", pa.string()), ("job_id", pa.string()),
])

PARITY = pa.struct([
    ("format", pa.string()), ("kind", pa.string()), ("psnr_db", pa.float64()), ("max_lsb", pa.float64()),
    ("max_abs", pa.float64()), ("passed", pa.bool_()), ("blocking", pa.bool_()), ("quality_drop_db", pa.float64()),
])

SCHEMA = pa.schema([
    ("model_id", pa.string()), ("created", pa.timestamp("ms", tz="UTC")), ("kind", pa.string()),
    ("backbone", pa.string()), ("mode", pa.string()), ("preset", pa.string()),
    ("search_id", pa.string()), ("trial_id", pa.string()), ("config", pa.string()),
    ("params", pa.int64()), ("macs", pa.int64()), ("macs_size", pa.string()),
    ("psnr", pa.float64()), ("ssim", pa.float64()), ("ms_ssim", pa.float64()), ("lpips", pa.float64()),
    ("dists", pa.float64()), ("lpips_weights", pa.string()),
    ("data_format", pa.string()), ("data_root", pa.string()), ("eval_split", pa.string()),
    ("n_test_images", pa.int64()), ("data_fingerprint", pa.string()),
    ("latency", pa.list_(LATENCY)), ("latency_ms", pa.float64()), ("latency_target", pa.string()),
    ("latency_statistic", pa.string()), ("mai_score", pa.float64()), ("mai_c", pa.float64()),
    ("mai_target", pa.string()),
    ("parity", pa.list_(PARITY)), ("parity_min_psnr_db", pa.float64()), ("parity_max_lsb", pa.float64()),
    ("int8_psnr_db", pa.float64()), ("int8_quality_drop_db", pa.float64()),
    ("artifacts", pa.map_(pa.string(), pa.string())), ("sha256", pa.map_(pa.string(), pa.string())),
    ("artifact_bytes", pa.map_(pa.string(), pa.int64())), ("deploy_size", pa.string()), ("gate_size", pa.string()),
    ("weights_sha256", pa.string()), ("same_weights_as", pa.list_(pa.string())),
    ("n_seeds", pa.int64()), ("seed_mean", pa.map_(pa.string(), pa.float64())),
    ("seed_sd", pa.map_(pa.string(), pa.float64())),
    ("sample_crop", pa.string()), ("target_crop", pa.string()), ("git_sha", pa.string()), ("code_sha256", pa.string()),
    ("run_dir", pa.string()),
])


def is_mobile(target: str | None) -> bool:
    """A phone over adb or a device-cloud phone: the targets a MAI score may be computed from."""
    return bool(target) and (target == "adb" or target.startswith(("adb:", "qai-hub:")))


def default_path() -> Path:
    return Path(os.environ.get("ISP_SEARCH_LEADERBOARD", DEFAULT_PATH))


def mai_score(psnr: float | None, runtime_ms: float | None, c: float = 1.0) -> float | None:
    """MAI challenge score 2^(2 PSNR) / (C * runtime): +0.5 dB is worth a 2x slowdown."""
    if psnr is None or runtime_ms is None or runtime_ms <= 0:
        return None
    return float(2.0 ** (2.0 * psnr) / (c * runtime_ms))


def normalise_row(row: dict, strict: bool = True) -> dict:
    """Fill defaults and serialise free-form fields; unknown keys are an error (the schema is declared) unless
    ``strict`` is False (rows read from an older table: what this schema no longer has is dropped)."""
    if "artifact_size" in row:  # an older table's name for deploy_size
        row = {**{k: v for k, v in row.items() if k != "artifact_size"}, "deploy_size": row["artifact_size"]}
    unknown = set(row) - set(SCHEMA.names)
    if unknown and strict:
        raise ValueError(f"leaderboard row has unknown columns {sorted(unknown)}")
    out = {name: row.get(name) for name in SCHEMA.names}
    out["created"] = out["created"] or datetime.now(timezone.utc)
    if out["config"] is not None and not isinstance(out["config"], str):
        out["config"] = json.dumps(out["config"], sort_keys=True, default=str)
    if isinstance(out["parity"], str):  # an older table's JSON string: not typed, not kept
        out["parity"] = None
    for key in ("artifacts", "sha256", "artifact_bytes"):
        if isinstance(out[key], dict):
            out[key] = list(out[key].items())
    fields = set(LATENCY.names)
    out["latency"] = [{k: v for k, v in e.items() if k in fields} for e in out["latency"] or []]
    out["parity"] = [{k: v for k, v in e.items() if k in PARITY.names} for e in out["parity"] or []]
    out["mai_c"] = 1.0 if out["mai_c"] is None else out["mai_c"]
    if out["mai_score"] is None and is_mobile(out["latency_target"]):
        # rows written without publish() get the score too, but only from a phone's (or device cloud's) time
        out["mai_score"] = mai_score(out["psnr"], out["latency_ms"], out["mai_c"])
        out["mai_target"] = out["latency_target"] if out["mai_score"] is not None else None
    elif not is_mobile(out["mai_target"]):
        out["mai_score"] = out["mai_target"] = None
    return out


def read(path: str | os.PathLike | None = None) -> pa.Table:
    """The whole table (empty with the schema when the file does not exist yet)."""
    p = Path(path) if path else default_path()
    if not p.exists():
        return SCHEMA.empty_table()
    try:
        table = pq.read_table(p)
    except Exception as e:
        raise UserError(f"{p}: not a readable leaderboard Parquet file ({type(e).__name__})") from None
    if table.schema.equals(SCHEMA):
        return table
    # written with an older schema: rebuild it in this one (columns it lacks stay empty)
    rows = [normalise_row(r, strict=False) for r in table.to_pylist()]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def append_rows(rows: list[dict], path: str | os.PathLike | None = None) -> Path:
    """Append rows atomically (lock, write temp, fsync, rename)."""
    p = Path(path) if path else default_path()
    new = pa.Table.from_pylist([normalise_row(r) for r in rows], schema=SCHEMA)
    with exclusive_lock(p.with_name(p.name + ".lock")):
        _write(pa.concat_tables([read(p), new]) if p.exists() else new, p)
    return p


def add_same_weights(model_id: str, other_id: str, path: str | os.PathLike | None = None) -> bool:
    """Record on ``model_id``'s row that ``other_id`` exported the same weights (once); False if no such row."""
    p = Path(path) if path else default_path()
    with exclusive_lock(p.with_name(p.name + ".lock")):
        rows = read(p).to_pylist() if p.exists() else []
        row = next((r for r in rows if r["model_id"] == model_id), None)
        if row is None:
            return False
        if other_id != model_id and other_id not in (row["same_weights_as"] or []):
            row["same_weights_as"] = [*(row["same_weights_as"] or []), other_id]
            _write(pa.Table.from_pylist(rows, schema=SCHEMA), p)
    return True


def _write(table: pa.Table, p: Path) -> None:
    """Replace ``p`` by ``table`` (temp file, fsync, rename); the caller holds the lock."""
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


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
