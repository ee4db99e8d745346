"""A quiet console (STYLE rule 13): third-party log noise silenced before those libraries load, in every process
that imports ``isp_search`` (the CLI, Ray workers, subprocesses).

Environment variables alone do not do it with TensorFlow 2.21: its oneDNN and CUDA-stub notices come from static
initialisers through absl *before* ``TF_CPP_MIN_LOG_LEVEL`` is read, and TFLite's "Created ... XNNPACK delegate"
and the converter's "fully_quantize: ..." lines ignore it altogether. So the first import of those packages, and
the few calls known to print, run with the process's native stderr (fd 2) captured: lines that match ``NOISE``
are dropped, every other line is written back unchanged. ``ISP_SEARCH_VERBOSE=1`` turns all of this off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import json
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

# Defaults only (a value the user set wins): TensorFlow's C++ log level (errors still shown), gRPC's.
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}
# How a Ray driver prints its workers' lines (read when ``ray`` is imported, so set here, before it is). No log
# deduplication: it drops words with digits, so two trials' progress lines looked alike and one of them became
# "[repeated 2x across cluster]" plus a hint about RAY_DEDUP_LOGS, coloured.
RAY_DRIVER_ENV = {"RAY_DEDUP_LOGS": "0"}

NOISE_PATTERNS = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    # absl-formatted INFO/WARNING lines (I0000 00:00:1796161211.913936    6376 port.cc:153] ...)
    r"\b[IW]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w.]+:\d+\]",
    # the spurious errors TF prints when torch has already registered the CUDA libraries
    r"\bE\d{4} .*(Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered)",
    # a CUDA build of TF on a machine without a usable GPU (TF only converts here; torch owns the GPU)
    r"\bE\d{4} .*failed call to cuInit",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"^INFO: (Created TensorFlow Lite XNNPACK delegate for CPU|Initialized TensorFlow Lite runtime)",
    r"^fully_quantize: \d+, inference_type: \d+",
)
NOISE = re.compile("|".join(NOISE_PATTERNS))

# Packages (and submodules) whose first import runs with native stderr filtered.
QUIET_IMPORTS = ("tensorflow", "tf_keras", "onnx2tf", "ai_edge_litert", "tensorboard")
# Calls that print on first use, filtered too: module -> attribute paths (patched right after the module loads).
QUIET_CALLS = {
    "ai_edge_litert.interpreter": ("Interpreter.__init__", "Interpreter.allocate_tensors"),
    "tensorflow.lite.python.interpreter": ("Interpreter.__init__", "Interpreter.allocate_tensors"),
    "onnx2tf": ("convert",),
}

_lock = threading.RLock()  # fd 2 is process-wide: one capture at a time
_installed = False


def enabled() -> bool:
    return os.environ.get("ISP_SEARCH_VERBOSE", "").lower() not in ("1", "true", "yes")


def noise_lines(text: str) -> list[str]:
    """The lines of ``text`` that ``NOISE`` drops."""
    return [line for line in text.splitlines() if NOISE.search(line)]


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Run the block with fd 2 captured; afterwards write back every captured line that is not ``NOISE``."""
    if not enabled():
        yield
        return
    with _lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 (closed, or a replaced sys.stderr): nothing to do
            yield
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True)
                        if not NOISE.search(ln)]
                if kept:
                    os.write(2, "".join(kept).encode())


def _filtered(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with native_stderr_filtered():
            return fn(*args, **kwargs)

    call.__isp_search_quiet__ = True
    return call


def _patch_calls(module: Any, paths: tuple[str, ...]) -> None:
    for path in paths:
        *owner_path, name = path.split(".")
        owner = module
        for part in owner_path:
            owner = getattr(owner, part, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if fn is not None and not getattr(fn, "__isp_search_quiet__", False):
            setattr(owner, name, _filtered(fn))


def _after_import(name: str, module: Any) -> None:
    if name in QUIET_CALLS:
        _patch_calls(module, QUIET_CALLS[name])
    if name == "tensorflow":
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        # TF only converts and analyses models here, never computes on a GPU: hide the GPUs from it now, inside the
        # filter, so its CUDA platform is not initialised later (the "failed call to cuInit" line) mid-search.
        with native_stderr_filtered(), contextlib.suppress(Exception):
            module.config.set_visible_devices([], "GPU")
    elif name == "optuna":  # "A new study created ..." per study; the search summary names the study
        with contextlib.suppress(Exception):
            module.logging.set_verbosity(module.logging.WARNING)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders return for the modules above."""

    watched = set(QUIET_IMPORTS) | set(QUIET_CALLS) | {"optuna"}

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        if name not in self.watched:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def quiet_exec(module: Any) -> None:
            with native_stderr_filtered():
                exec_module(module)
            _after_import(name, module)

        loader.exec_module = quiet_exec
        return spec


def install() -> None:
    """Set the quiet defaults and the import hook (idempotent). Called when ``isp_search`` is imported, and by
    Ray as every worker's ``worker_process_setup_hook``."""
    global _installed
    if _installed or not enabled():
        return
    _installed = True
    for k, v in {**ENV, **RAY_DRIVER_ENV}.items():
        os.environ.setdefault(k, v)
    if not _isatty(sys.stdout):  # the "(run_trial pid=...)" prefix without colour codes in a job log or a pipe
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # a searcher option Optuna marks experimental; the user can do nothing about it
    warnings.filterwarnings("ignore", message=r"Argument ``\w+`` is an experimental feature")
    # Ray Train's per-checkpoint INFO line, forwarded from every trial worker to the driver, and Tune's "Restored on
    # <ip> from checkpoint: Checkpoint(...)" (the trial says "attempt 2 after a restart, from step N" itself)
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.trainable.trainable").setLevel(logging.WARNING)
    sys.unraisablehook = _ray_teardown_dropped(sys.unraisablehook)
    for name, module in list(sys.modules.items()):  # already loaded (imported before isp_search)
        if name in QUIET_CALLS or name in ("tensorflow", "optuna"):
            _after_import(name, module)
    sys.meta_path.insert(0, _QuietFinder())


def _ray_teardown_dropped(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """``sys.unraisablehook`` less one report: Ray's teardown of a worker. At the end of a job (or when a trial is
    stopped) the raylet SIGTERMs the worker; Ray's handler (``sigterm_handler`` in ``ray/_private/worker.py``)
    raises ``SystemExit``. When that lands inside a weakref callback or a ``__del__``, Python cannot raise it and
    prints "Exception ignored in ..." with a traceback into the job log. Nothing of ours ran; every other
    unraisable exception is reported as before."""
    if getattr(hook, "__isp_search_quiet__", False):
        return hook

    def report(unraisable: Any) -> None:
        if not _ray_sigterm(unraisable.exc_type, unraisable.exc_traceback):
            hook(unraisable)

    report.__isp_search_quiet__ = True
    return report


def _ray_sigterm(exc_type: Any, tb: Any) -> bool:
    if exc_type is None or not issubclass(exc_type, SystemExit):
        return False
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "sigterm_handler" and code.co_filename.replace(os.sep, "/").endswith(
                "ray/_private/worker.py"):
            return True
        tb = tb.tb_next
    return False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def ray_runtime_env() -> dict:
    """``runtime_env`` for ``ray.init``: every worker (on any node) runs :func:`install` at start-up and gets the
    quiet environment. Under ``ray job submit`` only what the job's own runtime_env does not set (Ray refuses
    conflicting keys)."""
    if not enabled():
        return {}
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    job_env = (job.get("runtime_env") or {}) if isinstance(job, dict) else {}
    taken = set(job_env.get("env_vars") or {})
    out: dict = {"env_vars": {k: os.environ.get(k, v) for k, v in ENV.items() if k not in taken}}
    if "worker_process_setup_hook" not in job_env:
        out["worker_process_setup_hook"] = "isp_search.quiet.install"
    return {k: v for k, v in out.items() if v}
