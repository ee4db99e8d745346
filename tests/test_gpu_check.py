"""scripts/gpu-check --reduced on CPU: every check runs (the real train(), bench-train, a 2-trial search on an own
Ray head, an export) and reports what it saw, so the prepared GPU script cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.ray
@pytest.mark.slow
def test_gpu_check_reduced_runs_every_check(tmp_path):
    out = tmp_path / "lines.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, str(REPO / "scripts" / "gpu-check"), "--reduced", "--work",
                          str(tmp_path / "w"), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=tmp_path)
    stdout, stderr = p.communicate(timeout=900)
    r = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines == [json.loads(x) for x in out.read_text().splitlines()]  # --out holds the same lines
    by = {x["check"]: x for x in lines}
    assert list(by) == ["device", "step", "bench_train", "search", "export", "summary"], r.stderr[-3000:]
    failed = {k: v for k, v in by.items() if not v["ok"]}
    tails = {k: v.pop("log_tail", "")[-1500:] for k, v in failed.items()}
    assert r.returncode == 0 and not failed, json.dumps(failed)[:3000] + json.dumps(tails)
    assert all(x["reduced"] for x in lines) and by["device"]["auto_device"] == "cpu"
    step = by["step"]
    assert step["device"] == "cpu" and step["status"] == "completed" and step["steps"] == 4
    assert step["steps_per_s"] > 0 and 0 <= step["data_wait_share"] < 1 and step["peak_memory_gib"] > 0
    assert step["conv_outputs"]["generator"] and step["conv_outputs"]["frozen"]  # the hook saw both kinds
    assert not step["frozen_bf16"]  # autocast is CUDA-only: on CPU every conv ran in float32
    bench = by["bench_train"]
    assert bench["device"] == "cpu" and bench["batch_size"] == 2 and bench["step_ms"] > 0
    search = by["search"]
    assert search["trials_completed"] == 2 and search["concurrent"] and search["trial_devices"] == ["cpu", "cpu"]
    assert by["export"]["passed"] and by["export"]["artifact_bytes"]["onnx"] > 0
    head_dir = f"/tmp/gc{p.pid}"  # the script's own Ray head: stopped by pid, temp dir removed
    assert not Path(head_dir).exists()
    assert not [q for q in psutil.process_iter(["cmdline"]) if any(head_dir in a for a in q.info["cmdline"] or ())]
