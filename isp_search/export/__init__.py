"""Export to ONNX and TFLite with parity and op-list gates, latency benchmarks and the Parquet leaderboard.

The public names below are imported lazily so that importing the package does not load TensorFlow or torch.
"""

from __future__ import annotations

from isp_search.lazy import lazy_exports

_EXPORTS = {
    "export_model": "pipeline", "ExportResult": "pipeline", "parse_formats": "pipeline", "parse_size": "pipeline",
    "FORMATS": "pipeline", "FILE_NAMES": "pipeline",
    "bench_tflite": "bench", "bench_onnx": "bench", "bench_torch": "bench", "bench_adb": "bench",
    "parse_benchmark_model": "bench",
    "append_rows": "leaderboard", "read": "leaderboard", "Leaderboard": "leaderboard",
    "pareto_front": "leaderboard", "mai_score": "leaderboard",
    "publish": "publish", "Published": "publish", "count_macs": "publish",
    "write_report": "report",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
