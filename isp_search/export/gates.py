"""Export gates: numerical parity against PyTorch and an op list a mobile GPU delegate runs whole.

Every number is recorded in export.json; a model failing a gate never reaches the leaderboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Max |exported - PyTorch| per format; int8 is reported, not gated.
PARITY_LIMITS: dict[str, float | None] = {"onnx": 1e-5, "tflite": 1e-4, "tflite_fp16": 5e-3, "tflite_int8": None}

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
    value: float | list | None = None
    limit: float | None = None
    detail: str = ""
    blocking: bool = True  # int8 numbers are reported, never gate the model

    def as_dict(self) -> dict:
        return {"passed": self.passed, "value": self.value, "limit": self.limit, "detail": self.detail,
                "blocking": self.blocking}


@dataclass
class GateReport:
    gates: list[GateResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates if g.blocking)

    @property
    def reason(self) -> str:
        return "; ".join(f"{g.name}: {g.detail}" for g in self.gates if not g.passed and g.blocking)

    def as_dict(self) -> dict:
        return {g.name: g.as_dict() for g in self.gates}


def parity_gate(fmt: str, kind: str, reference: np.ndarray, output: np.ndarray) -> GateResult:
    """Max abs difference (NHWC arrays) against the format's limit; ``kind`` is ``random`` or ``real``."""
    if reference.shape != output.shape:
        return GateResult(f"parity/{fmt}/{kind}", False, None, PARITY_LIMITS.get(fmt),
                          f"shape {output.shape} != PyTorch {reference.shape}")
    err = float(np.max(np.abs(reference.astype(np.float64) - output.astype(np.float64))))
    limit = PARITY_LIMITS.get(fmt)
    ok = limit is None or (np.isfinite(err) and err <= limit)
    detail = f"max abs error {err:.3g}" + (f" > {limit:g}" if not ok else "")
    return GateResult(f"parity/{fmt}/{kind}", ok, err, limit, detail, blocking=limit is not None)


def op_gate(fmt: str, ops: list[str], ranks: dict[str, int]) -> GateResult:
    """Ops must be in the GPU allowlist; no GATHER/TRANSPOSE; no RESHAPE above 4-D."""
    problems = sorted({o for o in ops if o in FORBIDDEN or o not in GPU_ALLOWLIST})
    if ranks.get("RESHAPE", 0) > 4:
        problems.append(f"RESHAPE of rank {ranks['RESHAPE']}")
    ok = not problems
    return GateResult(f"ops/{fmt}", ok, sorted(set(ops)), None,
                      "ok" if ok else f"not for a mobile GPU: {', '.join(problems)}")
