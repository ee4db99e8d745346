"""The two small objects the publish path takes: how to export and time a model, and where its row comes from.

Sizes have one naming end to end (YAML, code, leaderboard columns, docs): ``deploy_size`` is the size the model is
exported, gated and timed at (the files the leaderboard row points to, e.g. Full HD); ``gate_size`` is an extra,
gate-only export at the size the model was trained and evaluated on (e.g. the data set's 256x256 patches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExportSettings:
    """How :func:`isp_search.export.publish.publish` exports, gates and times one model."""

    formats: tuple[str, ...] = ("onnx", "tflite", "tflite_fp16")
    deploy_size: tuple[int, int] = (1088, 1920)  # exported, gated and timed; the row's artifacts
    gate_size: tuple[int, int] | None = None  # an extra gate-only export (None: the deployed one only)
    runs: int = 10  # timed runs per benchmark
    threads: int = 2  # LiteRT CPU threads
    targets: tuple[str, ...] = ()  # phones: adb[:SERIAL] and qai-hub:DEVICE time the fp16 file on their GPU
    benchmark_binary: str = ""  # TFLite benchmark_model pushed to an adb phone
    mai_c: float = 1.0  # the MAI challenge score's constant

    @property
    def adb(self) -> dict[str, Any]:
        """Keyword arguments of :func:`isp_search.export.adb.bench_adb`."""
        return {"benchmark_binary": self.benchmark_binary or None, "runs": max(self.runs, 1)}


@dataclass(frozen=True)
class Provenance:
    """Where a leaderboard row comes from (STYLE rule 10: every row points to its run)."""

    kind: str = "search"  # search | baseline
    model_id: str | None = None  # the row's key (default: <search_id>/<trial_id>, else the export folder's name)
    search_id: str | None = None
    trial_id: str | None = None
    mode: str | None = None  # training mode (default: the checkpoint's)
    run_dir: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the sampled parameters
