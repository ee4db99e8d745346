"""Export gates, in the terms a deployed image is judged in, and an op list a mobile GPU delegate runs whole.

Parity compares the exported graph's output with PyTorch's after both are clamped to [0, 1], as the deployed
image is: PSNR of the exported output against PyTorch's, and the largest difference in 8-bit steps (LSB, 1/255).
A bare max-abs limit would refuse correct graphs: TFLite sums RMFA-Net tiny's global MEAN over a 1088x1920 plane
in plain fp32 and lands 3.6e-3 (0.9 LSB) away from PyTorch; a wrong channel order, an unfolded pixel shuffle or
a wrong normalisation preset lands tens of LSB and 20-30 dB away. Every number is recorded in export.json; a
model failing a blocking gate never reaches the leaderboard.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LSB = 1.0 / 255.0


@dataclass(frozen=True)
class ParityLimit:
    """A format passes when PSNR against PyTorch >= ``min_psnr_db`` and max error <= ``max_lsb`` 8-bit steps."""

    min_psnr_db: float
    max_lsb: float


# int8 is reported (PSNR and the quality drop on held-out images), never gated: it is an opt-in speed trade.
PARITY_LIMITS: dict[str, ParityLimit | None] = {
    "onnx": ParityLimit(45.0, 1.0),  # 1 LSB everywhere is 48.1 dB; a wrong channel order is 30-40 dB, 13-40 LSB
    "tflite": ParityLimit(45.0, 2.0),
    "tflite_fp16": ParityLimit(40.0, 4.0),
    "tflite_int8": None,
}

# Ops the TFLite GPU delegate (OpenCL/OpenGL) executes; anything else falls back to the CPU.
GPU_ALLOWLIST = frozenset({
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "ABS", "EXP", "LOG", "SQRT", "RSQRT",
    "POW", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "TANH", "RELU", "RELU6",
    "RELU_N1_TO_1", "LEAKY_RELU", "PRELU", "LOGISTIC", "HARD_SWISH", "ELU", "SOFTMAX", "DEPTH_TO_SPACE",
    "SPACE_TO_DEPTH", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "CONCATENATION", "MEAN", "REDUCE_MAX", "REDUCE_MIN", "SUM", "PAD", "MIRROR_PAD", "QUANTIZE", "DEQUANTIZE",
    "RESHAPE", "SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V",
})
FORBIDDEN = frozenset({"GATHER", "GATHER_ND", "TRANSPOSE"})


@dataclass
class GateResult:
    name: str
    passed: bool
    value: float | list | None = None  # parity: PSNR dB; ops: the op list
    limit: float | None = None
    detail: str = ""
    blocking: bool = True  # int8 numbers and notes are reported, never gate the model
    metrics: dict = field(default_factory=dict)  # parity: psnr_db, max_lsb, max_abs; analyser: its text
    located: dict | None = None  # where a failing parity error starts (see isp_search.export.locate)

    def as_dict(self) -> dict:
        d = {"passed": self.passed, "value": self.value, "limit": self.limit, "detail": self.detail,
             "blocking": self.blocking, **self.metrics}
        if self.located is not None:
            d["located"] = self.located
        return d


@dataclass
class GateReport:
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates if g.blocking)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed and g.blocking]

    @property
    def reason(self) -> str:
        return "; ".join(f"{g.name}: {g.detail}" for g in self.failed)

    def as_dict(self) -> dict:
        return {g.name: g.as_dict() for g in self.gates}


def image_error(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """PSNR (dB, inf when equal) and max error in 8-bit LSB of two outputs clamped to [0, 1]; raw max abs too."""
    ref = reference.astype(np.float64)
    out = output.astype(np.float64)
    if not (np.isfinite(ref).all() and np.isfinite(out).all()):  # a diverged model: no image to deploy
        return {"psnr_db": 0.0, "max_lsb": 255.0, "max_abs": float("inf"), "non_finite": True}
    max_abs = float(np.max(np.abs(ref - out)))
    d = np.clip(ref, 0, 1) - np.clip(out, 0, 1)
    mse = float(np.mean(d * d))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return {"psnr_db": psnr, "max_lsb": float(np.max(np.abs(d)) / LSB), "max_abs": max_abs}


def parity_gate(fmt: str, kind: str, reference: np.ndarray, output: np.ndarray) -> GateResult:
    """Exported vs PyTorch output (NHWC) on ``kind`` input (``random`` at the export size, ``real`` patches)."""
    limit = PARITY_LIMITS.get(fmt)
    name = f"parity/{fmt}/{kind}"
    if reference.shape != output.shape:
        return GateResult(name, False, None, limit.min_psnr_db if limit else None,
                          f"shape {output.shape} != PyTorch {reference.shape}")
    m = image_error(reference, output)
    ok = limit is None or (m["psnr_db"] >= limit.min_psnr_db and m["max_lsb"] <= limit.max_lsb)
    detail = f"PSNR {m['psnr_db']:.1f} dB, max {m['max_lsb']:.2f} LSB vs PyTorch"
    if m.get("non_finite"):
        detail = "NaN/inf in the output (PyTorch's or the export's): the weights have diverged"
    if not ok:
        detail += f" (needs >= {limit.min_psnr_db:g} dB and <= {limit.max_lsb:g} LSB)"
    return GateResult(name, ok, m["psnr_db"], limit.min_psnr_db if limit else None, detail,
                      blocking=limit is not None, metrics=m)


def op_gate(fmt: str, ops: list[str], ranks: dict[str, int], dcr_folds: int | None = None) -> GateResult:
    """Ops must be in the GPU allowlist; no GATHER/TRANSPOSE; no RESHAPE above 4-D."""
    problems = sorted({o for o in ops if o in FORBIDDEN or o not in GPU_ALLOWLIST})
    if ranks.get("RESHAPE", 0) > 4:
        problems.append(f"RESHAPE of rank {ranks['RESHAPE']}")
    ok = not problems
    detail = "ok" if ok else f"not for a mobile GPU: {', '.join(problems)}"
    if not ok and dcr_folds == 0 and "DEPTH_TO_SPACE" not in ops:
        detail += " (the pixel shuffle's CRD DepthToSpace was not folded into DCR, so the converter spelled it out)"
    return GateResult(f"ops/{fmt}", ok, sorted(set(ops)), None, detail)


def analyzer_gate(fmt: str, path: str | os.PathLike, report_path: str | os.PathLike) -> GateResult:
    """TensorFlow's own GPU-delegate compatibility check; its printed report is written whole to ``report_path``."""
    # deferred: TensorFlow (seconds to import; triton crashes after it) loads only for this check
    import tensorflow as tf

    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path), gpu_compatibility=True)
    text = sink.getvalue()
    Path(report_path).write_text(text)
    warnings = [ln.strip() for ln in text.splitlines() if "GPU COMPATIBILITY WARNING" in ln or "ERROR" in ln]
    ok = "compatible with GPU delegate" in text and not warnings
    detail = "compatible with the GPU delegate" if ok else (warnings[0] if warnings else "no verdict in its report")
    return GateResult(f"gpu_analyzer/{fmt}", ok, None, None, detail, metrics={"report": str(report_path)})
