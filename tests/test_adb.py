"""Phone latency over adb: TFLite benchmark_model's output parsed (delegation included) and adb's failures as
one-line errors (no phone can be attached here: a stand-in adb answers as the real one does)."""

from __future__ import annotations

import os
import textwrap

import pytest
from clirun import run_cli

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


def test_benchmark_model_parser_on_real_output():
    r = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)
    # benchmark_model prints an average, never per-run times: the entry says so instead of calling it a median
    assert r["inference_avg_us"] == 32917.4 and r["mean_ms"] == pytest.approx(32.9174)
    assert r["median_ms"] is None and r["statistic"] == "mean"
    assert r["init_ms"] == pytest.approx(412.337) and r["first_ms"] == pytest.approx(48.211)
    assert r["init_us"] == 412337 and r["first_inference_us"] == 48211 and r["warmup_avg_us"] == 34199.8
    assert r["runs"] == 50 and r["std_us"] == 262 and r["min_ms"] == pytest.approx(32.651)
    assert r["delegate"] == "gpu" and r["fully_delegated"] is True
    with pytest.raises(ValueError):
        parse_benchmark_model("ERROR: Failed to apply GPU delegate.")


def test_benchmark_model_parser_reports_partial_and_declined_delegation():
    partial = BENCHMARK_MODEL_OUTPUT.replace(
        "GPU delegate created.\n",
        "GPU delegate created.\nINFO: Replacing 3 out of 5 node(s) with delegate (TfLiteGpuDelegateV2) node, "
        "yielding 2 partitions for the whole graph.\n")
    r = parse_benchmark_model(partial)
    assert r["delegated_nodes"] == "3/5" and r["delegate_name"] == "TfLiteGpuDelegateV2"
    assert r["fully_delegated"] is False and r["delegate"].startswith("gpu (partial: 3/5 nodes")
    whole = BENCHMARK_MODEL_OUTPUT.replace("GPU delegate created.\n", "GPU delegate created.\nINFO: Replacing 5 node(s) "
                                           "with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions.\n")
    assert parse_benchmark_model(whole)["fully_delegated"] is True and parse_benchmark_model(whole)["delegate"] == "gpu"
    declined = BENCHMARK_MODEL_OUTPUT.replace(
        "Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.",
        "Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.")
    assert parse_benchmark_model(declined)["delegate"].startswith("cpu")
    assert parse_benchmark_model(declined)["fully_delegated"] is False


def test_adb_target_without_device_is_one_line_error(tmp_path, monkeypatch, capsys):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb on this PATH
    code, _, err = run_cli(capsys, "bench", binary, "--target", "adb", "--benchmark-binary", binary)
    assert code == 2
    assert err.strip().count("\n") == 0 and "adb" in err and "Traceback" not in err


def _fake_adb(folder, script: str):
    """An ``adb`` on PATH that answers as real adb does when no phone is usable (no phone can be attached here)."""
    adb = folder / "adb"
    adb.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    adb.chmod(0o755)
    binary = folder / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    model = folder / "model_fp16.tflite"
    model.write_bytes(b"TFL3")
    return binary, model


def test_adb_failures_are_one_line_with_all_of_adbs_stderr(tmp_path, monkeypatch):
    from isp_search.errors import UserError
    from isp_search.export.adb import bench_adb

    binary, model = _fake_adb(tmp_path, """
        echo '* daemon not running; starting now at tcp:5037' >&2
        echo '* daemon started successfully' >&2
        echo 'error: no devices/emulators found' >&2
        exit 1
    """)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(UserError) as e:
        bench_adb(model, binary)
    msg = str(e.value)
    assert "\n" not in msg and "daemon not running" in msg and "no devices/emulators found" in msg
    binary, model = _fake_adb(tmp_path, """
        [ "$1" = "-s" ] && shift 2
        case "$1" in
          get-state) echo device ;;
          push) echo "adb: error: failed to copy '$2' to '/data/local/tmp/': remote Read-only file system" >&2
                exit 1 ;;
        esac
    """)
    with pytest.raises(UserError) as e:
        bench_adb(model, binary, serial="R5CW")
    msg = str(e.value)
    assert msg.startswith("adb push model_fp16.tflite failed (exit 1)") and "Read-only file system" in msg
    assert "\n" not in msg
