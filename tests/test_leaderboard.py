"""Parquet leaderboard (atomic, concurrent), benchmark_model parsing, adb errors and the HTML report."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from isp_search.export import leaderboard as LB
from isp_search.export.bench import parse_benchmark_model

# Output of TFLite's benchmark_model run over adb with the GPU delegate (as printed by the tool).
BENCHMARK_MODEL_OUTPUT = """\
STARTING!
Log parameter values verbosely: [0]
Num runs: [50]
Min warmup runs: [10]
Graph: [/data/local/tmp/model_fp16.tflite]
Use gpu: [1]
Allow lower precision in gpu: [1]
Loaded model /data/local/tmp/model_fp16.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for GPU.
GPU delegate created.
Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
The input model file size (MB): 0.008188
Initialized session in 412.337ms.
Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=16 first=48211 curr=33012 min=32790 max=48211 avg=34199.8 std=3680
Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=33101 curr=32870 min=32651 max=34012 avg=32917.4 std=262
Inference timings in us: Init: 412337, First inference: 48211, Warmup (avg): 34199.8, Inference (avg): 32917.4
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=71.2344 overall=93.1875
"""


def _row(i: int, **kw) -> dict:
    base = dict(model_id=f"m{i}", backbone="efficient_isp", mode="unpaired", search_id="s", trial_id=f"t{i}",
                config={"optim": {"d_lr": 1e-5 * (i + 1)}}, params=3060, psnr=20.0 + i, lpips=0.3 - 0.01 * i,
                lpips_weights="random", latency=[{"target": "cpu", "runtime": "litert-xnnpack", "median_ms": 10.0 + i}],
                latency_ms=10.0 + i, latency_target="cpu", artifacts={"tflite": f"/x/{i}.tflite"},
                sha256={"tflite": "0" * 64})
    return base | kw


def test_append_read_round_trip(tmp_path):
    p = tmp_path / "lb.parquet"
    LB.append_rows([_row(0)], p)
    LB.append_rows([_row(1), _row(2)], p)
    df = pd.read_parquet(p)
    assert df["model_id"].tolist() == ["m0", "m1", "m2"]
    assert df["psnr"].tolist() == [20.0, 21.0, 22.0]
    assert df["latency"][1][0]["median_ms"] == 11.0
    assert dict(df["artifacts"][2])["tflite"] == "/x/2.tflite"
    assert LB.read(p).schema.equals(LB.SCHEMA)
    with pytest.raises(ValueError, match="unknown columns"):
        LB.append_rows([{"nope": 1}], p)


def test_mai_score_and_pareto():
    assert LB.mai_score(20.0, 10.0) == 2.0**40 / 10.0
    assert LB.mai_score(20.5, 20.0) == pytest.approx(LB.mai_score(20.0, 10.0))  # +0.5 dB pays for 2x time
    rows = [dict(lpips=0.2, psnr=20, latency_ms=5), dict(lpips=0.1, psnr=22, latency_ms=5),
            dict(lpips=0.1, psnr=21, latency_ms=1), dict(lpips=0.3, psnr=19, latency_ms=9)]
    assert LB.pareto_front(rows, {"lpips": "min", "psnr": "max", "latency_ms": "min"}) == [False, True, True, False]


_WRITER = textwrap.dedent("""
    import sys
    from isp_search.export import leaderboard as LB
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        LB.append_rows([dict(model_id=f"{tag}{i}", psnr=float(i))], path)
""")


def test_concurrent_appends_lose_no_row(tmp_path):
    p = tmp_path / "lb.parquet"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(p), tag, "15"]) for tag in ("a", "b")]
    assert [pr.wait(timeout=120) for pr in procs] == [0, 0]
    ids = pd.read_parquet(p)["model_id"].tolist()
    assert sorted(ids) == sorted([f"a{i}" for i in range(15)] + [f"b{i}" for i in range(15)])


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import pyarrow.parquet as pq
    from isp_search.export import leaderboard as LB
    real = pq.write_table
    def slow(table, where, **kw):  # write half, then stall: the kill lands mid-write
        where.write(b"PAR1" + b"x" * 1000)
        where.flush()
        print("writing", flush=True)
        time.sleep(60)
    pq.write_table = slow
    LB.append_rows([dict(model_id="never")], sys.argv[1])
""")


def test_writer_killed_mid_write_leaves_table_readable(tmp_path):
    p = tmp_path / "lb.parquet"
    LB.append_rows([_row(0), _row(1)], p)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(p)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert pd.read_parquet(p)["model_id"].tolist() == ["m0", "m1"]
    LB.append_rows([_row(2)], p)  # the lock was released with the dead process
    assert len(pd.read_parquet(p)) == 3


def test_benchmark_model_parser_on_real_output():
    r = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)
    assert r["inference_avg_us"] == 32917.4 and r["median_ms"] == pytest.approx(32.9174)
    assert r["init_us"] == 412337 and r["first_inference_us"] == 48211 and r["warmup_avg_us"] == 34199.8
    assert r["runs"] == 50 and r["std_us"] == 262 and r["delegate"] == "gpu"
    with pytest.raises(ValueError):
        parse_benchmark_model("ERROR: Failed to apply GPU delegate.")


def test_adb_target_without_device_is_one_line_error(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "bench", str(binary), "--target", "adb",
                        "--benchmark-binary", str(binary)], capture_output=True, text=True,
                       env=os.environ | {"PATH": str(tmp_path)})  # no adb on this PATH
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "adb" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (scripts/system-deps.sh)")
def test_html_report_renders_in_chromium(tmp_path):
    from isp_search.data.io import write_rgb

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        crop = tmp_path / f"c{i}.png"
        write_rgb(crop, rng.random((32, 32, 3)))
        rows.append(_row(i, sample_crop=str(crop), target_crop=str(crop)))
    p = tmp_path / "lb.parquet"
    LB.append_rows(rows, p)
    html = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "leaderboard", "--path", str(p), "--format", "html",
                        "--out", str(html)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = html.read_text()
    assert text.count("<tr class=") == 4 and "data:image/png;base64," in text and "m3" in text
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chrome'}", f"--screenshot={shot}", "--window-size=1200,1400",
                    f"file://{html}"], capture_output=True, timeout=120)
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] >= 1000
    top = img[150:700]  # the Pareto plot sits under the title: a real picture, not a blank page
    assert top.std() > 20 and len(np.unique(top.reshape(-1, 3), axis=0)) > 50


def test_leaderboard_cli_formats(tmp_path):
    p = tmp_path / "lb.parquet"
    LB.append_rows([_row(0), _row(1)], p)
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "leaderboard", "--path", str(p), "--format", "json",
                        "--sort", "psnr", "--top", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads(r.stdout)
    assert [x["model_id"] for x in rows] == ["m1"] and rows[0]["pareto"] is True
    bad = subprocess.run([sys.executable, "-m", "isp_search.cli", "leaderboard", "--path", str(p), "--sort", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--sort 'nope'" in bad.stderr


def test_benchmark_model_parser_reports_partial_and_declined_delegation():
    partial = BENCHMARK_MODEL_OUTPUT.replace(
        "GPU delegate created.\n",
        "GPU delegate created.\nINFO: Replacing 3 out of 5 node(s) with delegate (TfLiteGpuDelegateV2) node, "
        "yielding 2 partitions for the whole graph.\n")
    r = parse_benchmark_model(partial)
    assert r["delegated_nodes"] == "3/5" and r["delegate_name"] == "TfLiteGpuDelegateV2" and r["delegate"] == "gpu"
    declined = BENCHMARK_MODEL_OUTPUT.replace(
        "Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.",
        "Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.")
    assert parse_benchmark_model(declined)["delegate"].startswith("cpu")


def test_leaderboard_class_scores_rows_written_directly(tmp_path):
    board = LB.Leaderboard(tmp_path / "lb.parquet")
    board.append(dict(model_id="a", psnr=20.0, latency_ms=10.0, lpips=0.2))
    board.append(dict(model_id="b", psnr=19.0, latency_ms=20.0, lpips=0.3))
    table = board.read()
    assert table.column("mai_score").to_pylist() == [2.0**40 / 10.0, 2.0**38 / 20.0]
    assert LB.pareto_front(table, {"lpips": "min", "psnr": "max", "latency_ms": "min"}) == [True, False]
    assert board.to_pandas()["model_id"].tolist() == ["a", "b"]
