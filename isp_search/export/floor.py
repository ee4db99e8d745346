"""The compute floor a CPU latency is judged against: 2 x MACs / the peak this CPU reaches on the same threads.

The peak is measured, not looked up: the best of a few timed fp32 SGEMMs (PyTorch's BLAS) on ``threads`` threads,
taken right before the runtimes are timed, so a loaded machine lowers both alike. MACs are counted from the timed
``.tflite`` graph itself (convolutions and fully connected layers; element-wise ops are not counted), so the floor
belongs to the file that was timed. A runtime at 1.0x the floor would run every multiply-add at SGEMM speed.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from isp_search.export.tflite_export import plain_interpreter


def peak_gflops(threads: int = 2, n: int = 2048, repeats: int = 10) -> dict:
    """Best fp32 SGEMM throughput (GFLOP/s) of ``n`` x ``n`` matrices on ``threads`` threads."""

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)  # warm-up: thread pool, caches
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return {"gflops": 2.0 * n**3 / best / 1e9, "method": f"torch fp32 SGEMM {n}x{n}x{n}, best of {repeats}",
            "threads": threads}


def tflite_macs(path: str | os.PathLike) -> int:
    """Multiply-accumulates of one inference of a ``.tflite`` graph: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV
    and FULLY_CONNECTED, from the tensor shapes (NHWC activations, OHWI filters)."""

    it = plain_interpreter(path)
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in it.get_tensor_details()}
    total = 0
    for op in it._get_ops_details():
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            out, w = shapes[outs[0]], shapes[ins[1]]
            per_out = w[1] * w[2] * (w[3] if name == "CONV_2D" else 1)
            total += int(np.prod(out)) * per_out
        elif name == "TRANSPOSE_CONV":  # inputs: output_shape, weights, input
            w, x = shapes[ins[1]], shapes[ins[2]]
            total += int(np.prod(x)) * w[0] * w[1] * w[2]
        elif name == "FULLY_CONNECTED":
            out, w = shapes[outs[0]], shapes[ins[1]]
            total += int(np.prod(out)) * w[1]
    return total


def floor_ms(macs: int, gflops: float) -> float:
    """Time the multiply-adds would take at ``gflops`` (2 FLOP per MAC)."""
    return 2.0 * macs / (gflops * 1e9) * 1e3


def compute_floor(tflite: str | os.PathLike, threads: int) -> dict:
    """The floor of ``tflite`` on this CPU: its MACs, the measured peak and the resulting milliseconds."""
    macs = tflite_macs(tflite)
    peak = peak_gflops(threads)
    return {"macs": macs, **peak, "floor_ms": floor_ms(macs, peak["gflops"])}
