"""ONNX -> TFLite through onnx2tf (float32, float16 weights with float32 I/O, int8 calibrated on data patches).

onnx2tf 1.29.24 (Python 3.11) downloads a calibration file when every model input has 3 channels; a local file
of that name in its working directory avoids it, so conversion runs in a temp folder that holds one.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch._dynamo  # noqa: F401  (must load before TensorFlow: triton, which it imports, crashes after TF)

from isp_search.errors import UserError

_ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def convert(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, int8_calibration: np.ndarray | None = None,
            verbose: bool = False) -> dict[str, Path]:
    """Convert; returns paths keyed ``tflite`` (fp32), ``tflite_fp16`` and, with calibration data, ``tflite_int8``.

    ``int8_calibration`` is NHWC float32 network input, e.g. normalised packed RAW patches.
    """
    try:
        # deferred: onnx2tf imports TensorFlow (seconds) and loads only to convert
        import onnx2tf
    except ImportError as e:  # pragma: no cover - installed by the Makefile
        raise UserError(f"onnx2tf is not importable ({e}); run `make install`") from None
    onnx_path = Path(onnx_path).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-"))
    old_cwd = os.getcwd()
    try:
        os.chdir(work)
        np.save(work / _ONNX2TF_SAMPLE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        kwargs: dict = {}
        if int8_calibration is not None:
            calib = work / "calib.npy"
            np.save(calib, np.ascontiguousarray(int8_calibration, dtype=np.float32))
            c = int8_calibration.shape[-1]
            kwargs = dict(
                output_integer_quantized_tflite=True,
                custom_input_op_name_np_data_path=[["raw", str(calib), [0.0] * c, [1.0] * c]],
                quant_type="per-channel",
            )
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink) if not verbose else contextlib.nullcontext(), _no_full_graph_dry_run():
            onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(work / "tf"),
                            copy_onnx_input_output_names_to_tflite=True, non_verbose=not verbose,
                            disable_strict_mode=True, **kwargs)
        stem = onnx_path.stem
        produced = {
            "tflite": work / "tf" / f"{stem}_float32.tflite",
            "tflite_fp16": work / "tf" / f"{stem}_float16.tflite",
        }
        if int8_calibration is not None:
            produced["tflite_int8"] = work / "tf" / f"{stem}_integer_quant.tflite"
        names = {"tflite": "model_fp32.tflite", "tflite_fp16": "model_fp16.tflite", "tflite_int8": "model_int8.tflite"}
        out: dict[str, Path] = {}
        for key, src in produced.items():
            if not src.is_file():
                raise RuntimeError(f"onnx2tf did not produce {src.name}")
            dst = out_dir / names[key]
            shutil.copyfile(src, dst)
            out[key] = dst
        return out
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _no_full_graph_dry_run():
    """Skip onnx2tf's ONNX dry run that keeps every intermediate tensor of the whole graph in memory.

    onnx2tf runs the ONNX model once with *all* node outputs requested, to estimate shapes and to correct
    transpositions op by op ("strict mode"). At 1088x1920 that holds ~80 full-size tensors at once (13 GB for
    RMFA-Net tiny) and the per-op TF re-runs cost minutes. Our graphs have static shapes, so the estimate is not
    needed, and onnx2tf already skips the step itself when it would not fit in RAM; the parity gates then check
    the converted graph against PyTorch. Making the dry run fail is how that documented skip is taken.
    """
    # deferred: onnx2tf imports TensorFlow (seconds) and loads only to convert
    import onnx2tf.onnx2tf as core

    real = core.dummy_onnx_inference

    def refuse(*args, **kwargs):
        raise MemoryError("isp-search: whole-graph dry run skipped (static shapes; parity gates check the result)")

    core.dummy_onnx_inference = refuse
    try:
        yield
    finally:
        core.dummy_onnx_inference = real


def interpreter(path: str | os.PathLike, threads: int | None = None):
    """A LiteRT interpreter (XNNPACK CPU delegate is LiteRT's default), tensors allocated."""
    # deferred: LiteRT loads only where a .tflite file is run
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def run_tflite(it, x_nhwc: np.ndarray) -> np.ndarray:
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.ascontiguousarray(x_nhwc, dtype=inp["dtype"]))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def plain_interpreter(path: str | os.PathLike, allocate: bool = True):
    """An interpreter without default delegates, so the op list is the graph's own (no DELEGATE nodes).

    Listing ops needs no tensors: ``allocate=False`` skips the arena (gigabytes for a graph at 1088x1920)."""
    # deferred: LiteRT loads only where a .tflite file is run
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    if allocate:
        it.allocate_tensors()
    return it


def op_list(path: str | os.PathLike) -> list[str]:
    """Builtin op names of a .tflite graph in execution order (e.g. CONV_2D, TANH, DEPTH_TO_SPACE)."""
    return [d["op_name"] for d in plain_interpreter(path, allocate=False)._get_ops_details()]


def tensor_ranks(path: str | os.PathLike) -> dict[str, int]:
    """Largest tensor rank touched by each op name (used to refuse RESHAPE above 4-D)."""
    it = plain_interpreter(path, allocate=False)
    details = {t["index"]: len(t["shape"]) for t in it.get_tensor_details()}
    ranks: dict[str, int] = {}
    for d in it._get_ops_details():
        r = max([details.get(i, 0) for i in list(d["outputs"]) + list(d["inputs"]) if i >= 0] or [0])
        ranks[d["op_name"]] = max(ranks.get(d["op_name"], 0), r)
    return ranks
