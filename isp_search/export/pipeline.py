"""``export_model``: PyTorch generator -> ONNX -> TFLite (fp32/fp16/int8), gated, with export.json."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from isp_search.errors import UserError
from isp_search.export import gates as G
from isp_search.export.onnx_export import example_input, export_onnx
from isp_search.models.checkpoint import LoadedGenerator, load_generator

FORMATS = ("onnx", "tflite", "tflite_fp16", "tflite_int8")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model_fp32.tflite", "tflite_fp16": "model_fp16.tflite",
              "tflite_int8": "model_int8.tflite"}


@dataclass
class ExportResult:
    passed: bool
    reason: str
    gates: dict
    paths: dict[str, str]
    sha256: dict[str, str]
    info: dict = field(default_factory=dict)


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_formats(text: str) -> list[str]:
    out = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise UserError(f"--formats: unknown {', '.join(bad) or '(none)'}; valid: {', '.join(FORMATS)}")
    return out


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r}: expected HxW, e.g. 1088x1920") from None
    if h <= 0 or w <= 0 or h % 4 or w % 4:
        raise UserError(f"--size {text!r}: height and width must be positive multiples of 4")
    return h, w


def _fit(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Tile then crop a (C, h, w) patch to (C, H, W) so real data fits any export size."""
    reps = (1, -(-shape[1] // x.shape[1]), -(-shape[2] // x.shape[2]))
    return x.repeat(*reps)[:, : shape[1], : shape[2]]


def real_inputs(loaded: LoadedGenerator, data_root: str, data_format: str, shape: tuple[int, ...], n: int,
                split: str = "train") -> torch.Tensor:
    """``n`` normalised network inputs from a data set, shaped like the export input (N, C, H, W)."""
    from isp_search.data.dataset import RawRGBDataset

    ds = RawRGBDataset(data_root, data_format, split, loaded.spec, preset=loaded.preset, with_reference=False)
    if len(ds) == 0:
        raise UserError(f"{data_root}: split {split!r} has no images for calibration")
    return torch.stack([_fit(ds[i % len(ds)]["input"], shape[1:]) for i in range(n)])


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def export_model(source: LoadedGenerator | str | os.PathLike, out_dir: str | os.PathLike,
                 formats: list[str] = ("onnx", "tflite", "tflite_fp16"), size: tuple[int, int] = (1088, 1920),
                 calib: tuple[str, str] | None = None, arch: str | None = None, n_calib: int = 8) -> ExportResult:
    """Export ``source`` (a loaded generator, checkpoint, run folder or paper state_dict) and gate it.

    ``calib`` = (data root, format) supplies real patches for the parity check and int8 calibration; without it
    both use the embedded synthetic data set (built once under ``$ISP_SEARCH_CACHE``), so every export is gated
    on real-looking RAW as well as on random input.
    """
    from isp_search.export import tflite_export as T
    import onnxruntime as ort

    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source, arch=arch)
    out = Path(out_dir).resolve()  # export.json and leaderboard rows carry absolute artifact paths
    out.mkdir(parents=True, exist_ok=True)
    h, w = size
    model = loaded.model.eval().cpu()
    x_rand = example_input(loaded.spec, h, w, seed=1)
    if calib is None:
        from isp_search.data.synth import ensure_synthetic

        root = Path(os.environ.get("ISP_SEARCH_CACHE", Path.home() / ".cache" / "isp-search")) / "synth_mai2022"
        ensure_synthetic(root, "mai2022")
        calib = (str(root), "mai2022")
    x_real = real_inputs(loaded, calib[0], calib[1], tuple(x_rand.shape), n_calib) if calib else None
    inputs = {"random": x_rand} | ({"real": x_real[:2]} if x_real is not None else {})
    with torch.no_grad():
        refs = {k: _nhwc(torch.cat([model(v[i : i + 1]) for i in range(len(v))])) for k, v in inputs.items()}

    report = G.GateReport()
    paths: dict[str, str] = {}
    info: dict = {"arch": loaded.spec.name, "preset": loaded.preset, "size": [h, w], "source": str(loaded.path),
                  "input": "normalised packed RAW, NHWC 1xH/2xW/2x4" if loaded.spec.input_layout == "packed"
                  else "normalised RGB planes, NHWC 1xHxWx3", "output": "RGB NHWC 1xHxWx3", "real_data": calib}
    onnx_path = out / FILE_NAMES["onnx"]
    info["onnx"] = export_onnx(model, loaded.spec, onnx_path, h, w)
    if "onnx" in formats:
        paths["onnx"] = str(onnx_path)
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        for kind, x in inputs.items():
            y = np.concatenate([sess.run(None, {"raw": x[i : i + 1].numpy()})[0] for i in range(len(x))])
            report.gates.append(G.parity_gate("onnx", kind, refs[kind], y.transpose(0, 2, 3, 1)))
    tfl = [f for f in formats if f.startswith("tflite")]
    if tfl:
        calib_nhwc = _nhwc(x_real) if ("tflite_int8" in tfl and x_real is not None) else None
        produced = T.convert(onnx_path, out, int8_calibration=calib_nhwc)
        for fmt in tfl:
            p = produced[fmt]
            paths[fmt] = str(p)
            ops = T.op_list(p)
            info.setdefault("tflite_ops", {})[fmt] = ops
            report.gates.append(G.op_gate(fmt, ops, T.tensor_ranks(p)))
            report.gates[-1].blocking = fmt != "tflite_int8"
            try:
                it = T.interpreter(p, threads=2)
            except RuntimeError as e:  # XNNPACK refuses some int8 graphs; the reference kernels still run them
                report.gates.append(G.GateResult(f"xnnpack/{fmt}", False, None, None,
                                                 f"XNNPACK cannot run it: {str(e).splitlines()[0][:120]}",
                                                 blocking=fmt != "tflite_int8"))
                if fmt != "tflite_int8":
                    continue
                it = T._plain_interpreter(p)
            for kind, x in inputs.items():
                xs = _nhwc(x)
                y = np.concatenate([T.run_tflite(it, xs[i : i + 1]) for i in range(len(xs))])
                report.gates.append(G.parity_gate(fmt, kind, refs[kind], y))
        if "onnx" not in formats:
            onnx_path.unlink(missing_ok=True)
    digests = {k: sha256(v) for k, v in paths.items()}
    result = ExportResult(report.passed, report.reason, report.as_dict(), paths, digests, info)
    doc = {"passed": result.passed, "reason": result.reason, "gates": result.gates, "artifacts": paths,
           "sha256": digests, **info}
    tmp = out / "export.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, out / "export.json")
    return result
