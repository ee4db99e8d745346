"""A quiet console: no TensorFlow / absl / oneDNN / CUDA-stub / TFLite log line in what `export`, `bench`,
`leaderboard add` and a Ray worker print, and progress as plain lines when the output is not a terminal."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from isp_search.models import create_generator, spec_for
from isp_search.models.checkpoint import save_generator
from isp_search.progress import Progress

# Lines these libraries printed on this machine before quiet.py (TF 2.21, LiteRT 2.3, onnx2tf 1.29): our own
# list, not quiet.NOISE, so loosening that filter turns these tests red.
SEEN_NOISE = ("All log messages before absl::InitializeLog", "absl::", "oneDNN custom operations",
              "TF_ENABLE_ONEDNN_OPTS", "cudart_stub", "cuda_", "Could not find cuda drivers", "cpu_feature_guard",
              "This TensorFlow binary is optimized", "rebuild TensorFlow", "Unable to register cu",
              "computation placer", "tensorflow/core", "Created TensorFlow Lite XNNPACK delegate", "fully_quantize:",
              "I0000 ", "W0000 ", "E0000 ")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ISP_SEARCH_VERBOSE")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(p in line for p in SEEN_NOISE)]


def _run(args: list[str], cwd, **env: str) -> str:
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", *args], capture_output=True, text=True, cwd=cwd, check=False,
                       env=_env(**env), timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    return out


def test_the_noise_is_real_here():
    """The control: with the filter off, importing TensorFlow prints the lines the other tests look for."""
    r = subprocess.run([sys.executable, "-c", "import isp_search, tensorflow"], capture_output=True, text=True,
                       env=_env(ISP_SEARCH_VERBOSE="1"), timeout=300)
    assert r.returncode == 0 and _noise(r.stderr), r.stderr[-2000:]


def test_tf_device_listing_prints_no_cuinit_line():
    """Found in `make demo`: the search's export made TF list its devices after import, and a CUDA build of TF on a
    machine without a usable GPU printed "E0000 ... failed call to cuInit" outside the import filter."""
    code = "import isp_search, tensorflow as tf; print('devices', len(tf.config.get_visible_devices()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "devices" in out and not _noise(out), _noise(out) or out[-2000:]


@pytest.mark.slow
def test_export_bench_and_leaderboard_add_print_no_library_noise(tmp_path, synth_root):
    torch.manual_seed(0)
    ckpt = save_generator(tmp_path / "eff.pt", create_generator("efficient_isp"), "efficient_isp",
                          spec_for("efficient_isp").preset)
    out = _run(["export", str(ckpt), "--out", str(tmp_path / "ex"), "--size", "32x32", "--formats",
                "onnx,tflite,tflite_int8", "--calib-data", str(synth_root)], tmp_path)
    assert "parity/tflite" in out and not _noise(out), _noise(out)
    out = _run(["bench", str(tmp_path / "ex"), "--runs", "2", "--warmup", "1"], tmp_path)
    assert "litert-xnnpack fp32" in out and "litert-xnnpack int8" in out and not _noise(out), _noise(out)
    assert "compute floor" in out and "x floor" in out  # every runtime beside the floor
    out = _run(["leaderboard", "add", "--weights", str(ckpt), "--data", str(synth_root), "--deploy-size", "32x32",
                "--runs", "2", "--backbone-weights", "random", "--path", str(tmp_path / "lb.parquet"),
                "--out", str(tmp_path / "add")], tmp_path)
    assert "added" in out and not _noise(out), _noise(out)


_RAY_DRIVER = textwrap.dedent("""
    import sys
    import ray
    from isp_search.search.cluster import connect

    connect(sys.argv[1])

    @ray.remote
    def load_tensorflow(tflite):  # pickled by value: the worker imports TensorFlow before any isp_search code
        import tensorflow
        from ai_edge_litert.interpreter import Interpreter
        Interpreter(model_path=tflite).allocate_tensors()
        print("worker-loaded-tf", tensorflow.__version__, flush=True)

    ray.get(load_tensorflow.remote(sys.argv[2]))
    import time; time.sleep(2)  # let the worker's lines reach the driver
""")


_RAY_TEARDOWN = textwrap.dedent("""
    import os, signal, sys, time
    import ray
    from isp_search.search.cluster import connect

    connect(sys.argv[1])

    @ray.remote
    class Churn:  # its main thread lives in weakref callbacks, where Ray's SIGTERM handler cannot raise SystemExit
        def pid(self):
            return os.getpid()

        def run(self, seconds):
            import weakref

            class Obj:
                pass

            def gone(ref):
                time.sleep(0.05)

            end = time.time() + seconds
            while time.time() < end:
                obj = Obj()
                ref = weakref.ref(obj, gone)
                del obj
            return "churned"

    churn = Churn.remote()
    pid = ray.get(churn.pid.remote())
    done = churn.run.remote(4)
    time.sleep(1)
    os.kill(pid, signal.SIGTERM)  # what the raylet sends every worker of a job that ends
    print(ray.get(done), flush=True)
    time.sleep(2)  # let the worker's lines reach the driver
""")


@pytest.fixture(scope="module")
def head():
    sys.path.insert(0, os.path.dirname(__file__))
    from raycluster import Head

    head = Head()
    try:
        yield head
    finally:
        head.stop()


def _driver(head, script: str, *args: str, cwd, **extra: str) -> str:
    from raycluster import ENV

    env = {k: v for k, v in ENV.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ISP_SEARCH_VERBOSE")} | extra
    r = subprocess.run([sys.executable, "-c", script, head.address, *args], capture_output=True, text=True,
                       env=env, timeout=300, cwd=cwd)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_ray_worker_prints_no_library_noise(tmp_path, head):
    from isp_search.export.onnx_export import export_onnx
    from isp_search.export.tflite_export import convert

    model = create_generator("efficient_isp")
    export_onnx(model, spec_for("efficient_isp"), tmp_path / "m.onnx", 16, 16)
    tflite = convert(tmp_path / "m.onnx", tmp_path)["tflite"]
    out = _driver(head, _RAY_DRIVER, str(tflite), cwd=tmp_path)
    assert "worker-loaded-tf" in out and not _noise(out), _noise(out)


@pytest.mark.ray
@pytest.mark.slow
def test_sigterm_to_a_ray_worker_prints_no_traceback(tmp_path, head):
    """The SIGTERM Ray's teardown sends a worker, arriving inside a weakref callback: without the quiet hook that
    is an "Exception ignored in ..." report with Ray's ``sigterm_handler`` traceback in the job log (it failed a
    job-log test in CI once); with it, nothing, and the worker's other output still arrives."""
    loud = _driver(head, _RAY_TEARDOWN, cwd=tmp_path, ISP_SEARCH_VERBOSE="1")
    assert "churned" in loud and "Exception ignored in" in loud and "in sigterm_handler" in loud, loud[-3000:]
    quiet = _driver(head, _RAY_TEARDOWN, cwd=tmp_path)
    assert "churned" in quiet, quiet[-3000:]
    assert "Exception ignored" not in quiet and "Traceback" not in quiet and "SystemExit" not in quiet, quiet[-3000:]


def test_other_unraisable_exceptions_are_still_reported():
    code = textwrap.dedent("""
        import weakref
        import isp_search.quiet as q
        q.install()

        class Obj:
            pass

        def gone(ref):
            raise SystemExit("not Ray's")

        obj = Obj()
        ref = weakref.ref(obj, gone)
        del obj
        print("alive", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0 and "alive" in r.stdout, r.stdout + r.stderr
    assert "Exception ignored in" in r.stderr and "not Ray's" in r.stderr, r.stderr


def test_progress_is_plain_lines_off_a_terminal():
    buf = io.StringIO()  # not a tty: no bar, no carriage returns
    bar = Progress(10, "train", unit="step", every_s=0.0, stream=buf)
    for _ in range(10):
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and lines[0].startswith("train: 1/10 step (10%)")
    assert lines[-1].startswith("train: 10/10 step (100%)") and lines[-1].endswith("loss 0.5") and len(lines) == 10
    quiet = io.StringIO()
    Progress(10, "train", stream=quiet, enabled=False).close()
    assert quiet.getvalue() == ""


def _trial(trial_id: str, status: str, failures: int = 0, **last):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, status=status, num_failures=failures, last_result=last,
                           config={"optim.d_color_lr": 1e-5}, path=None, pickled_error_file=None)


def _shown(table, trials, done=False) -> str:
    """What Ray's progress callback prints: ``report`` whenever ``should_report`` says so."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if table.should_report(trials, done=done):
            table.report(trials, done)
    return buf.getvalue()


def test_trial_table_prints_on_news_only():
    from isp_search.search.reporter import TrialTable

    table = TrialTable(min_gap_s=60.0, parameter_columns=["optim.d_color_lr"], metric_columns={"step": "step"})
    queued = [_trial("a", "PENDING"), _trial("b", "PENDING")]
    assert not _shown(table, queued)  # queued trials are no news
    running = [_trial("a", "RUNNING"), queued[1]]
    assert re.search(r"^a +RUNNING", _shown(table, running), re.MULTILINE) and not _shown(table, running)
    done = [_trial("a", "TERMINATED", final=1, trial_status="completed"), _trial("b", "TERMINATED")]
    assert not _shown(table, done)  # news, but within min_gap_s of the last table: deferred ...
    table._printed_at -= 61
    out = _shown(table, done)
    assert re.search(r"^a +COMPLETE", out, re.MULTILINE) and re.search(r"^b +PRUNED", out, re.MULTILINE)
    assert not _shown(table, done, done=True)  # ... the end once
    retried = [_trial("a", "PENDING", failures=1), done[1]]
    out = _shown(table, retried)  # a failure is said at once, in one line, however recent the last table
    assert out.splitlines()[0] == "trial a: failed; attempt 2 starts from its last checkpoint", out


def test_trial_table_fits_120_columns_with_short_parameter_names():
    """Long dotted keys become short column names (said once in a legend); parameters that still do not fit are
    left out, counted, rather than the table passing 120 columns; no ANSI escape."""
    from isp_search.search.reporter import TrialTable, short_names

    keys = [f"optim.param_number_{i}_with_a_long_name" for i in range(12)] + ["optim.d_texture_lr", "data.demosaicer"]
    assert short_names(["optim.d_texture_lr", "data.demosaicer", "optim.g_beta1"]) == {
        "optim.d_texture_lr": "d_txtr_lr", "data.demosaicer": "demosaicer", "optim.g_beta1": "g_beta1"}
    assert short_names(["a.lr", "b.lr"]) == {"a.lr": "a.lr", "b.lr": "b.lr"}  # ambiguous: two components
    table = TrialTable(parameter_columns=keys, metric_columns={"lpips": "lpips", "psnr": "psnr", "step": "step"})
    trials = [_trial("0a1b2c3d", "RUNNING", lpips=0.0912345, psnr=21.23456, step=1200)]
    trials[0].config = {k: 1.2345678e-05 for k in keys}
    out = _shown(table, trials)
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120 and "\x1b" not in out, out
    assert lines[1].startswith("trial     state    ") and lines[1].endswith("lpips    psnr   step"), out
    assert lines[2].startswith("0a1b2c3d  RUNNING  1.235e-05") and lines[2].endswith("0.09123  21.23  1200"), out
    assert re.search(r"^\(\d+ more parameter\(s\) in each trial's params.json\)$", out, re.MULTILINE), out
    assert "columns: prm_nmbr_0_w = optim.param_number_0_with_a_long_name" in out, out
