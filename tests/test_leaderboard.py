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
    # benchmark_model prints an average, never per-run times: the entry says so instead of calling it a median
    assert r["inference_avg_us"] == 32917.4 and r["mean_ms"] == pytest.approx(32.9174)
    assert r["median_ms"] is None and r["statistic"] == "mean"
    assert r["init_ms"] == pytest.approx(412.337) and r["first_ms"] == pytest.approx(48.211)
    assert r["init_us"] == 412337 and r["first_inference_us"] == 48211 and r["warmup_avg_us"] == 34199.8
    assert r["runs"] == 50 and r["std_us"] == 262 and r["min_ms"] == pytest.approx(32.651)
    assert r["delegate"] == "gpu" and r["fully_delegated"] is True
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
    alias = subprocess.run([sys.executable, "-m", "isp_search.cli", "leaderboard", "add", "--weights", "w.pt",
                            "--format", "mai2022"], capture_output=True, text=True)  # no --format alias of --data-format
    assert alias.returncode == 2 and "unrecognized arguments: --format" in alias.stderr


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


def test_leaderboard_class_scores_rows_written_directly(tmp_path):
    board = LB.Leaderboard(tmp_path / "lb.parquet")
    board.append(dict(model_id="a", psnr=20.0, latency_ms=10.0, lpips=0.2, latency_target="adb:R5CW"))
    board.append(dict(model_id="b", psnr=19.0, latency_ms=20.0, lpips=0.3, latency_target="qai-hub:Samsung Galaxy S24"))
    board.append(dict(model_id="c", psnr=25.0, latency_ms=5.0, lpips=0.3, latency_target="cpu", mai_score=1e9))
    board.append(dict(model_id="d", psnr=25.0, latency_ms=5.0, lpips=0.3, latency_target="cpu"))
    table = board.read()
    # the MAI score is defined on a phone GPU: never computed from (or kept for) a CPU time, and labelled
    assert table.column("mai_score").to_pylist() == [2.0**40 / 10.0, 2.0**38 / 20.0, None, None]
    assert table.column("mai_target").to_pylist() == ["adb:R5CW", "qai-hub:Samsung Galaxy S24", None, None]
    table = table.slice(0, 2)
    assert LB.pareto_front(table, {"lpips": "min", "psnr": "max", "latency_ms": "min"}) == [True, False]
    assert board.to_pandas()["model_id"].tolist() == ["a", "b", "c", "d"]


def test_parity_is_typed_and_an_older_table_is_read_into_the_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "lb.parquet"
    parity = [{"format": "tflite", "kind": "real", "psnr_db": 61.5, "max_lsb": 0.4, "max_abs": 1e-3,
               "passed": True, "blocking": True, "quality_drop_db": None}]
    LB.append_rows([_row(0, parity=parity, artifact_bytes={"tflite": 12345})], p)
    t = LB.read(p)
    assert t.schema.field("parity").type == pa.list_(LB.PARITY)  # typed, not a JSON string
    assert t.column("parity").to_pylist()[0][0]["psnr_db"] == 61.5
    assert dict(t.column("artifact_bytes").to_pylist()[0])["tflite"] == 12345
    old = tmp_path / "old.parquet"  # a table from before: parity as a JSON string, fewer latency fields
    pq.write_table(pa.Table.from_pylist([{"model_id": "o", "parity": '{"parity/tflite/real": 1e-7}', "psnr": 20.0,
                                          "latency": [{"target": "cpu", "median_ms": 9.0}], "latency_ms": 9.0,
                                          "latency_target": "cpu", "mai_score": 1e11}]), old)
    t = LB.read(old)
    assert t.schema.equals(LB.SCHEMA)
    row = t.to_pylist()[0]
    assert row["parity"] == [] and row["latency"][0]["median_ms"] == 9.0 and row["mai_score"] is None
    LB.append_rows([_row(1)], old)
    assert LB.read(old).column("model_id").to_pylist() == ["o", "m1"]


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


def test_qai_hub_target_arguments_and_missing_client_or_token(tmp_path):
    from isp_search.errors import UserError
    from isp_search.export.qaihub import parse_target

    assert parse_target("qai-hub:Samsung Galaxy S24") == "Samsung Galaxy S24"
    with pytest.raises(UserError, match="expected qai-hub:DEVICE"):
        parse_target("qai-hub:")
    model = tmp_path / "model_fp16.tflite"
    model.write_bytes(b"TFL3")
    env = os.environ | {"QAIHUB_CLIENT_INI": str(tmp_path / "none.ini"), "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "bench", str(model), "--target",
                        "qai-hub:Samsung Galaxy S24"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    try:
        import qai_hub  # noqa: F401  (optional extra)
    except ImportError:
        assert "qai-hub client is not installed" in r.stderr and "pip install" in r.stderr
    else:
        assert "no API token configured" in r.stderr and "qai-hub configure --api_token" in r.stderr
    bad = subprocess.run([sys.executable, "-m", "isp_search.cli", "bench", str(model), "--target", "phone"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "qai-hub:DEVICE" in bad.stderr


# download_profile()'s dict for a TFLite job on a GPU that took 3 of 4 layers (AI Hub's documented keys).
_PROFILE = {"execution_summary": {"estimated_inference_time": 31800, "first_load_time": 215000,
                                  "warm_load_time": 41000, "all_inference_times": [32100, 31800, 31950, 33000]},
            "execution_detail": [{"name": "conv1", "type": "CONV_2D", "compute_unit": "GPU"},
                                 {"name": "tanh", "type": "TANH", "compute_unit": "GPU"},
                                 {"name": "conv2", "type": "CONV_2D", "compute_unit": "GPU"},
                                 {"name": "d2s", "type": "DEPTH_TO_SPACE", "compute_unit": "CPU"}]}


def test_qai_hub_profile_becomes_a_latency_entry():
    from isp_search.export.qaihub import profile_to_latency

    e = profile_to_latency(_PROFILE, "Samsung Galaxy S24", "qualcomm-snapdragon-8gen3", "1088x1920",
                           "/x/model_fp16.tflite")
    assert e["target"] == "qai-hub:Samsung Galaxy S24" and e["soc"] == "qualcomm-snapdragon-8gen3"
    assert e["median_ms"] == pytest.approx(32.025) and e["statistic"] == "median" and e["runs"] == 4
    assert e["compute_units"] == "CPU: 1, GPU: 3" and e["fully_delegated"] is False
    assert e["delegate"] == "gpu (partial: 3/4 layers)" and e["init_ms"] == pytest.approx(215.0)
    assert e["precision"] == "fp16" and set(e) <= set(LB.LATENCY.names) | {"mobile"}


def test_qai_hub_profile_from_the_clients_own_protobuf_types():
    pb = pytest.importorskip("qai_hub.public_api_pb2", reason="qai-hub is an optional extra (isp-search[qaihub])")
    from qai_hub.client import _profile_pb_to_python_dict

    from isp_search.export.qaihub import profile_to_latency

    detail = pb.ProfileDetail(major_version=1, minor_version=2, execution_time=31800, cold_load_time=215000)
    detail.all_execution_times.extend([32100, 31800, 31950, 33000])
    for name, unit in (("conv1", pb.COMPUTE_UNIT_GPU), ("d2s", pb.COMPUTE_UNIT_GPU)):
        detail.layer_details.add(name=name, layer_type_name="CONV_2D", compute_unit=unit)
    e = profile_to_latency(_profile_pb_to_python_dict(detail), "Samsung Galaxy S24", None, "1088x1920", "m_fp16.tflite")
    assert e["median_ms"] == pytest.approx(32.025) and e["fully_delegated"] is True and e["delegate"] == "gpu"


def _paper_sd(folder, arch="efficient_isp", nan=False):
    import torch

    from isp_search.models import create_generator

    torch.manual_seed(0)
    sd = create_generator(arch).state_dict()
    if nan:  # a diverged training run: its weights hold NaN
        sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    p = folder / f"{arch}{'_nan' if nan else ''}.pth"
    torch.save(sd, p)
    return p


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "isp_search.cli", *map(str, args)], capture_output=True, text=True,
                          **kw)


@pytest.mark.slow  # one CLI export + evaluation + timing (~40 s)
def test_leaderboard_add_row_names_its_deployed_files_data_and_device(tmp_path, synth_root):
    from isp_search.export.pipeline import sha256
    from isp_search.export.tflite_export import interpreter

    lb = tmp_path / "lb.parquet"
    r = _cli("leaderboard", "--path", lb, "add", "--weights", _paper_sd(tmp_path), "--arch", "efficient_isp",
             "--size", "64x64", "--data", synth_root, "--backbone-weights", "random", "--runs", "2",
             "--out", tmp_path / "exp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("added baseline/efficient_isp:") and "on mai2022 test (4 images)" in r.stdout
    row = LB.read(lb).to_pylist()[0]  # --path before `add` is honoured
    arts, digests, sizes = dict(row["artifacts"]), dict(row["sha256"]), dict(row["artifact_bytes"])
    timed = row["latency"][0]
    assert timed["model"] == arts["tflite"] and timed["sha256"] == digests["tflite"] == sha256(arts["tflite"])
    assert all(sizes[k] == os.path.getsize(v) for k, v in arts.items()) and set(arts) >= {"onnx", "tflite_fp16"}
    assert list(interpreter(arts["tflite"]).get_output_details()[0]["shape"]) == [1, 64, 64, 3]
    assert row["artifact_size"] == row["macs_size"] == timed["size"] == "64x64"
    assert row["data_format"] == "mai2022" and row["data_root"] == str(synth_root.resolve())
    assert row["eval_split"] == "test" and row["n_test_images"] == 4 and len(row["data_fingerprint"]) == 16
    assert {(p["format"], p["kind"]) for p in row["parity"]} == {(f, k) for f in ("onnx", "tflite", "tflite_fp16")
                                                                  for k in ("random", "real")}
    assert row["parity_min_psnr_db"] > 45 and row["parity_max_lsb"] <= 2
    assert timed["target"] == "cpu" and timed["runtime"] == "litert-xnnpack" and timed["precision"] == "fp32"
    assert timed["host_cpu"] and timed["threads"] == 2 and timed["init_ms"] > 0 and timed["first_ms"] > 0
    assert row["latency_statistic"] == "median" and row["mai_score"] is None and row["mai_target"] is None


def test_refused_model_gets_no_row_and_bench_refuses_its_folder(tmp_path, synth_root):
    lb = tmp_path / "lb.parquet"
    r = _cli("leaderboard", "add", "--weights", _paper_sd(tmp_path, nan=True), "--arch", "efficient_isp", "--size",
             "32x32", "--formats", "tflite", "--out", tmp_path / "exp", "--path", lb)  # --path after `add`
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and "not added: export refused: parity/" in r.stderr
    assert "weights have diverged" in r.stderr and not lb.exists()
    b = _cli("bench", tmp_path / "exp", "--runs", "1", "--warmup", "0")
    assert b.returncode == 2 and "refused by its gates" in b.stderr and "--force" in b.stderr
    forced = _cli("bench", tmp_path / "exp", "--runs", "1", "--warmup", "0", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]


class _DivergesAboveGateSize:
    """Builds a generator whose exported graph is off by 0.05 only at inputs wider than the gate export."""

    @staticmethod
    def build():
        import torch

        from isp_search.models import create_generator

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = create_generator("efficient_isp")

            def forward(self, x):
                y = self.inner(x)
                return y + 0.05 if torch.onnx.is_in_onnx_export() and x.shape[-1] > 40 else y

        return M().eval()


def test_model_refused_at_the_deployed_size_gets_no_row_though_its_gate_export_passed(tmp_path, synth_root):
    from pathlib import Path

    from isp_search.export.publish import publish
    from isp_search.models import spec_for
    from isp_search.models.checkpoint import LoadedGenerator

    loaded = LoadedGenerator(_DivergesAboveGateSize.build(), spec_for("efficient_isp"), "paper", Path("d"))
    lb = tmp_path / "lb.parquet"
    res = publish(loaded, tmp_path / "o", formats=("onnx",), size=(96, 96), gate_size=(64, 64),
                  data=(str(synth_root), "mai2022"), metrics={"psnr": 30.0}, leaderboard_path=lb)
    assert (tmp_path / "o" / "gate_64x64" / "export.json").is_file()
    assert res.row is None and not res.export.passed and "parity/onnx/random" in res.export.reason
    assert not lb.exists() and not (tmp_path / "o" / "leaderboard_row.json").exists()


@pytest.mark.ray  # Ray's own Checkpoint and Result types (no cluster needed)
def test_search_export_path_gives_a_refused_trial_no_row(tmp_path, synth_root):
    from dataclasses import replace
    from pathlib import Path

    import torch
    from ray.train import Checkpoint, Result

    from isp_search.models import create_generator, spec_for
    from isp_search.models.checkpoint import save_generator
    from isp_search.search.post import ParetoEntry, publish_trial
    from isp_search.search.space import load_space
    from isp_search.search.tuner import Experiment

    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    g = create_generator("efficient_isp")
    with torch.no_grad():
        g.conv1.weight[0, 0, 0, 0] = float("nan")
    save_generator(ckpt_dir / "last.pt", g, "efficient_isp", spec_for("efficient_isp").preset)
    space = load_space(Path(__file__).parents[1] / "search_spaces" / "smoke.yaml")
    space = replace(space, export=replace(space.export, size=(32, 32), bench_size=(32, 32), formats=("tflite",),
                                          results=str(tmp_path / "results")))
    ck = Checkpoint.from_directory(str(ckpt_dir))
    result = Result(metrics={"score": 1.0, "psnr": 20.0}, checkpoint=ck, error=None, path=str(tmp_path / "trial"),
                    best_checkpoints=[(ck, {"score": 1.0})])
    entry = ParetoEntry(0, "t0", {"lpips": 0.3, "psnr": 20.0}, {})
    publish_trial(entry, result, space, Experiment("s", str(tmp_path), "s", str(tmp_path / "j.log")), "max",
                  (str(synth_root), "mai2022"), "unpaired")
    assert not entry.exported and entry.note.startswith("export refused: parity/")
    assert not (tmp_path / "results" / "leaderboard.parquet").exists()


def test_search_exports_spread_along_the_front():
    from isp_search.search.post import spread

    assert spread(7, 3) == [0, 3, 6] and spread(2, 3) == [0, 1] and spread(5, 1) == [0] and spread(4, 0) == []
