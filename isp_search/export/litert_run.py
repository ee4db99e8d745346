"""Run a .tflite on batches in a separate, light process (numpy + LiteRT only, no torch or TensorFlow).

At 1088x1920 LiteRT needs ~3.3 GB for RMFA-Net tiny's tensors; in the exporting process, which already holds
TensorFlow, torch and ONNX Runtime, that made a 6 GB peak. A fresh ``python -m`` child that exits after the run
keeps every process of an export under ~4 GB and gives the memory back at once. (A multiprocessing child would
re-import the caller's main script; a script without a ``__main__`` guard would then export again.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _run(path: str, batches: dict[str, np.ndarray], threads: int | None, plain: bool) -> dict[str, np.ndarray]:
    # deferred: LiteRT loads only where a .tflite file is run
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if plain else {}
    it = Interpreter(model_path=path, num_threads=1 if plain else threads, **kw)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    result = {}
    for kind, xs in batches.items():
        ys = []
        for x in xs:
            it.set_tensor(inp["index"], np.ascontiguousarray(x[None], dtype=inp["dtype"]))
            it.invoke()
            ys.append(it.get_tensor(out["index"]).copy())
        result[kind] = np.concatenate(ys)
    return result


def run_batches(path: str | os.PathLike, batches: dict[str, np.ndarray], threads: int | None = 2,
                plain: bool = False) -> dict[str, np.ndarray]:
    """Outputs of ``path`` for each NHWC batch, computed in a child process; ``plain`` = reference kernels (no
    XNNPACK). An interpreter error in the child (e.g. XNNPACK refusing a graph) is raised here as RuntimeError."""
    with tempfile.TemporaryDirectory(prefix="isp-litert-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **batches)
        cmd = [sys.executable, "-m", "isp_search.export.litert_run", str(path), str(src), str(dst),
               str(threads or 0), "1" if plain else "0"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
            raise RuntimeError(lines[-1] if lines else f"LiteRT child exited {res.returncode}")
        with np.load(dst) as z:
            return {k: z[k] for k in z.files}


if __name__ == "__main__":
    model, src, dst, n_threads, plain_flag = sys.argv[1:6]
    with np.load(src) as z:
        inputs = {k: z[k] for k in z.files}
    np.savez(dst, **_run(model, inputs, int(n_threads) or None, plain_flag == "1"))
