"""Latency: LiteRT (XNNPACK) on this CPU beside ONNX Runtime and PyTorch (phones: :mod:`isp_search.export.adb`,
Qualcomm AI Hub: :mod:`isp_search.export.qaihub`).

CPU numbers use warm-up runs then ``runs`` timed runs and report the median and the 10th/90th percentiles, with
the host CPU model, the init (interpreter build + allocation) and first-inference times.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from isp_search.export.tflite_export import interpreter

MAI_INPUT = (1, 544, 960, 4)  # -> 1 x 1088 x 1920 x 3


def host_cpu() -> str:
    """This machine's CPU model (``/proc/cpuinfo`` model name), e.g. 'AMD EPYC 9R45 ... (x86_64)'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _stats(times_ms: list[float], target: str, threads: int, **extra) -> dict:
    a = np.asarray(times_ms)
    return {"target": target, "threads": threads, "runs": len(a), "median_ms": float(np.median(a)),
            "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "max_ms": float(a.max()), **extra}


def _time(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def bench_tflite(path: str | os.PathLike, threads: int = 2, runs: int = 20, warmup: int = 3) -> dict:
    """LiteRT with its default XNNPACK delegate at the model's own (static) input shape."""

    t0 = time.perf_counter()
    it = interpreter(path, threads=threads)
    init_ms = (time.perf_counter() - t0) * 1e3
    inp = it.get_input_details()[0]
    x = np.random.default_rng(0).random(inp["shape"], dtype=np.float32).astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    first_ms = _time(it.invoke, 1, 0)[0]
    times = _time(it.invoke, runs, warmup)
    return _stats(times, "cpu", threads, runtime="litert-xnnpack", delegate="xnnpack", model=str(path),
                  input_shape=[int(v) for v in inp["shape"]], init_ms=init_ms, first_ms=first_ms, device=host_cpu(), host_cpu=host_cpu())


def bench_onnx(path: str | os.PathLike, threads: int = 2, runs: int = 20, warmup: int = 3) -> dict:
    # deferred: ONNX Runtime loads only where an ONNX file is run
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    x = np.random.default_rng(0).random(i.shape, dtype=np.float32)
    times = _time(lambda: sess.run(None, {i.name: x}), runs, warmup)
    return _stats(times, "cpu", threads, runtime="onnxruntime", model=str(path), input_shape=list(i.shape))


def bench_torch(model, input_shape_nchw: tuple[int, ...], threads: int = 2, runs: int = 20, warmup: int = 3) -> dict:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(*input_shape_nchw)
        model = model.eval()
        with torch.inference_mode():
            times = _time(lambda: model(x), runs, warmup)
    finally:
        torch.set_num_threads(old)
    return _stats(times, "cpu", threads, runtime="pytorch", input_shape=list(input_shape_nchw))


from isp_search.export.adb import bench_adb, parse_benchmark_model  # noqa: E402,F401  (public names here too)
