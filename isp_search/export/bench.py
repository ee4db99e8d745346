"""Latency: LiteRT (XNNPACK) on this CPU beside ONNX Runtime and PyTorch, and TFLite ``benchmark_model`` over adb.

CPU numbers use warm-up runs then ``runs`` timed runs and report the median and the 10th/90th percentiles.
The adb path runs the user's ``benchmark_model`` binary on a phone with the GPU delegate (FP16 allowed), as in
the MAI challenge protocol.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np

from isp_search.errors import UserError

MAI_INPUT = (1, 544, 960, 4)  # -> 1 x 1088 x 1920 x 3


def _stats(times_ms: list[float], target: str, threads: int, **extra) -> dict:
    a = np.asarray(times_ms)
    return {"target": target, "threads": threads, "runs": len(a), "median_ms": float(np.median(a)),
            "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), **extra}


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
    from isp_search.export.tflite_export import interpreter

    it = interpreter(path, threads=threads)
    inp = it.get_input_details()[0]
    x = np.random.default_rng(0).random(inp["shape"], dtype=np.float32).astype(inp["dtype"])
    it.set_tensor(inp["index"], x)
    times = _time(it.invoke, runs, warmup)
    return _stats(times, "cpu", threads, runtime="litert-xnnpack", model=str(path),
                  input_shape=[int(v) for v in inp["shape"]])


def bench_onnx(path: str | os.PathLike, threads: int = 2, runs: int = 20, warmup: int = 3) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    x = np.random.default_rng(0).random(i.shape, dtype=np.float32)
    times = _time(lambda: sess.run(None, {i.name: x}), runs, warmup)
    return _stats(times, "cpu", threads, runtime="onnxruntime", model=str(path), input_shape=list(i.shape))


def bench_torch(model, input_shape_nchw: tuple[int, ...], threads: int = 2, runs: int = 20, warmup: int = 3) -> dict:
    import torch

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


_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*([\d.]+),\s*First inference:\s*([\d.]+),\s*"
    r"Warmup \(avg\):\s*([\d.eE+]+),\s*Inference \(avg\):\s*([\d.eE+]+)"
)


def parse_benchmark_model(text: str) -> dict:
    """Parse TFLite ``benchmark_model`` output; raises ValueError when no timing line is present."""
    m = _TIMINGS.search(text)
    if not m:
        raise ValueError("no 'Inference timings in us' line in benchmark_model output")
    init, first, warm, avg = (float(v) for v in m.groups())
    out = {"init_us": init, "first_inference_us": first, "warmup_avg_us": warm, "inference_avg_us": avg,
           "median_ms": avg / 1e3}
    # the last "count=" line is the timed run (the first is the warm-up)
    all_runs = re.findall(r"count=(\d+)\s+first=\S+\s+curr=\S+\s+min=(\S+)\s+max=(\S+)\s+avg=(\S+)\s+std=(\S+)", text)
    if all_runs:
        runs = [None, *all_runs[-1]]
        out.update(runs=int(runs[1]), min_us=float(runs[2]), max_us=float(runs[3]), std_us=float(runs[5]))
    gpu = re.search(r"(?:Created TensorFlow Lite delegate for GPU|GPU delegate created)", text)
    out["delegate"] = "gpu" if gpu or "Use gpu: [1]" in text else "cpu"
    # A GPU delegate that declines the graph leaves TFLite on the CPU without failing: say so in the row.
    if "will not be executed by the delegate" in text:
        out["delegate"] = "cpu (gpu delegate declined the graph)"
    nodes = re.search(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((\w+)\)", text)
    if nodes:
        out["delegated_nodes"] = nodes.group(1) + (f"/{nodes.group(2)}" if nodes.group(2) else "")
        out["delegate_name"] = nodes.group(3)
    return out


def bench_adb(model: str | os.PathLike, benchmark_binary: str | os.PathLike, serial: str | None = None,
              runs: int = 50, warmup: int = 10, adb: str = "adb") -> dict:
    """Push ``model`` and ``benchmark_binary`` to a phone and time it with the GPU delegate (FP16 allowed)."""
    if shutil.which(adb) is None:
        raise UserError(f"--target adb: no '{adb}' on PATH; install Android platform-tools and connect a phone")
    if not Path(benchmark_binary).is_file():
        raise UserError(f"--benchmark-binary {benchmark_binary}: no such file (the TFLite benchmark_model for arm64)")
    base = [adb] + (["-s", serial] if serial else [])
    state = subprocess.run(base + ["get-state"], capture_output=True, text=True)
    if state.returncode != 0 or state.stdout.strip() != "device":
        msg = (state.stderr or state.stdout).strip().splitlines()
        raise UserError(f"--target adb{':' + serial if serial else ''}: no device ready ({msg[0] if msg else 'none'})")
    remote = "/data/local/tmp"
    for f in (model, benchmark_binary):
        subprocess.run(base + ["push", str(f), remote], check=True, capture_output=True)
    rbin, rmodel = f"{remote}/{Path(benchmark_binary).name}", f"{remote}/{Path(model).name}"
    subprocess.run(base + ["shell", "chmod", "+x", rbin], check=True, capture_output=True)
    cmd = [rbin, f"--graph={rmodel}", "--use_gpu=true", "--gpu_precision_loss_allowed=true",
           f"--num_runs={runs}", f"--warmup_runs={warmup}"]
    res = subprocess.run(base + ["shell", " ".join(cmd)], capture_output=True, text=True)
    text = res.stdout + res.stderr
    try:
        out = parse_benchmark_model(text)
    except ValueError:
        raise UserError(f"benchmark_model failed on the device: {text.strip().splitlines()[-1] if text.strip() else res.returncode}") from None
    dev = subprocess.run(base + ["shell", "getprop", "ro.product.model"], capture_output=True, text=True)
    soc = subprocess.run(base + ["shell", "getprop", "ro.soc.model"], capture_output=True, text=True)
    out.update(target=f"adb:{serial}" if serial else "adb", device=dev.stdout.strip(), soc=soc.stdout.strip(),
               model=str(model), runs=out.get("runs", runs), threads=None, p10_ms=None, p90_ms=None)
    return out
