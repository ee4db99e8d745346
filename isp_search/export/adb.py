"""On-phone latency: TFLite's ``benchmark_model`` over adb with the GPU delegate, FP16 allowed (MAI protocol).

``benchmark_model`` prints averages, not per-run times, so the entry says ``statistic: mean`` and leaves
``median_ms`` empty rather than passing an average off as a median. A GPU delegate that takes only part of the
graph is kept and flagged (``fully_delegated: false``, ``delegated_nodes: "3/5"``): such a number is not a
GPU number. Every adb failure is one line that carries all of adb's stderr (real adb often prints
"* daemon not running; starting now" before the line that matters).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from isp_search.errors import UserError

REMOTE_DIR = "/data/local/tmp"

_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*([\d.]+),\s*First inference:\s*([\d.]+),\s*"
    r"Warmup \(avg\):\s*([\d.eE+]+),\s*Inference \(avg\):\s*([\d.eE+]+)"
)
_RUNS = re.compile(r"count=(\d+)\s+first=(\S+)\s+curr=(\S+)\s+min=(\S+)\s+max=(\S+)\s+avg=(\S+)\s+std=(\S+)")
_NODES = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((\w+)\)")


def parse_benchmark_model(text: str) -> dict:
    """Parse TFLite ``benchmark_model`` output; raises ValueError when no timing line is present."""
    m = _TIMINGS.search(text)
    if not m:
        raise ValueError("no 'Inference timings in us' line in benchmark_model output")
    init, first, warm, avg = (float(v) for v in m.groups())
    out: dict = {"init_us": init, "first_inference_us": first, "warmup_avg_us": warm, "inference_avg_us": avg,
                 "init_ms": init / 1e3, "first_ms": first / 1e3, "mean_ms": avg / 1e3, "median_ms": None,
                 "statistic": "mean"}
    runs = _RUNS.findall(text)
    if runs:  # the last "count=" line is the timed run (the first is the warm-up)
        n, _, _, lo, hi, _, std = runs[-1]
        out.update(runs=int(n), min_us=float(lo), max_us=float(hi), std_us=float(std), min_ms=float(lo) / 1e3,
                   max_ms=float(hi) / 1e3, std_ms=float(std) / 1e3)
    gpu = re.search(r"(?:Created TensorFlow Lite delegate for GPU|GPU delegate created)", text)
    out["delegate"] = "gpu" if gpu or "Use gpu: [1]" in text else "cpu"
    declined = "will not be executed by the delegate" in text
    nodes = _NODES.search(text)
    if nodes:
        done, total = int(nodes.group(1)), int(nodes.group(2) or nodes.group(1))
        out.update(delegated_nodes=f"{done}/{total}", delegate_name=nodes.group(3), fully_delegated=done == total)
    elif out["delegate"] == "gpu":
        out["fully_delegated"] = not declined and "completely executed by the delegate" in text
    if declined:  # the GPU delegate declined the graph: TFLite ran it on the CPU without failing
        out.update(delegate="cpu (gpu delegate declined the graph)", fully_delegated=False)
    elif out.get("fully_delegated") is False:
        out["delegate"] = f"gpu (partial: {out.get('delegated_nodes', '?')} nodes, the rest on the CPU)"
    return out


def _adb_error(what: str, res: subprocess.CompletedProcess) -> UserError:
    lines = [ln.strip() for ln in ((res.stderr or "") + "\n" + (res.stdout or "")).splitlines() if ln.strip()]
    return UserError(f"{what} failed (exit {res.returncode}): {' | '.join(lines) or 'no output'}")


def _run(base: list[str], args: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(base + args, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what}: adb gave no answer within 600 s") from None
    if res.returncode != 0:
        raise _adb_error(what, res)
    return res


def parse_target(target: str) -> str | None:
    """``adb`` or ``adb:SERIAL`` -> the serial (None: the only attached device)."""
    if target != "adb" and not target.startswith("adb:"):
        raise UserError(f"--target {target!r}: expected adb or adb:SERIAL")
    serial = target.split(":", 1)[1] if ":" in target else None
    if serial == "":
        raise UserError("--target adb:: empty serial; use adb or adb:SERIAL (see `adb devices`)")
    return serial


def check_adb(benchmark_binary: str | os.PathLike | None, adb: str = "adb") -> None:
    """Fail before minutes of export: adb on PATH and a benchmark_model binary that exists."""
    if shutil.which(adb) is None:
        raise UserError(f"--target adb: no '{adb}' on PATH; install Android platform-tools and connect a phone")
    if not benchmark_binary:
        raise UserError("--target adb needs --benchmark-binary PATH (TFLite benchmark_model for the phone)")
    if not Path(benchmark_binary).is_file():
        raise UserError(f"--benchmark-binary {benchmark_binary}: no such file (the TFLite benchmark_model for arm64)")


def bench_adb(model: str | os.PathLike, benchmark_binary: str | os.PathLike, serial: str | None = None,
              runs: int = 50, warmup: int = 10, adb: str = "adb") -> dict:
    """Push ``model`` and ``benchmark_binary`` to a phone and time it with the GPU delegate (FP16 allowed)."""
    check_adb(benchmark_binary, adb)
    target = f"adb:{serial}" if serial else "adb"
    base = [adb] + (["-s", serial] if serial else [])
    state = subprocess.run(base + ["get-state"], capture_output=True, text=True, timeout=60, check=False)
    if state.returncode != 0 or state.stdout.strip() != "device":
        raise _adb_error(f"--target {target}: no device ready (adb get-state)", state)
    for f in (model, benchmark_binary):
        _run(base, ["push", str(f), REMOTE_DIR], f"adb push {Path(f).name}")
    rbin, rmodel = f"{REMOTE_DIR}/{Path(benchmark_binary).name}", f"{REMOTE_DIR}/{Path(model).name}"
    _run(base, ["shell", "chmod", "+x", rbin], f"adb shell chmod +x {rbin}")
    cmd = [rbin, f"--graph={rmodel}", "--use_gpu=true", "--gpu_precision_loss_allowed=true",
           f"--num_runs={runs}", f"--warmup_runs={warmup}"]
    res = subprocess.run(base + ["shell", " ".join(cmd)], capture_output=True, text=True, timeout=900, check=False)
    try:
        out = parse_benchmark_model(res.stdout + res.stderr)
    except ValueError:
        raise _adb_error("benchmark_model on the device", res) from None

    def prop(name: str) -> str:
        return subprocess.run(base + ["shell", "getprop", name], capture_output=True, text=True, check=False).stdout.strip()

    out.update(target=target, runtime="tflite-benchmark_model", device=prop("ro.product.model"),
               soc=prop("ro.soc.model") or prop("ro.board.platform"), threads=None, model=str(model),
               runs=out.get("runs", runs), precision="fp16" if "fp16" in Path(model).name else "fp32 (fp16 allowed)")
    return out
