"""``export_model``: PyTorch generator -> ONNX -> TFLite (fp32/fp16/int8), gated, with export.json.

Gates (see :mod:`isp_search.export.gates`): parity of every format against PyTorch in PSNR and 8-bit LSB on
random input at the export size and on real patches tiled to it (int8: on held-out images, never its calibration
images, with its quality drop in dB); the op list and TensorFlow's GPU-delegate analyser for every .tflite; and
the normalisation preset the weights were trained with. A failing parity gate is located op by op
(:mod:`isp_search.export.locate`) and export.json says where the error starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from isp_search.data.dataset import Caching, RawRGBDataset
from isp_search.data.synth import ensure_synthetic
from isp_search.errors import UserError
from isp_search.export import gates as G
from isp_search.export import tflite_export as T
from isp_search.export.litert_run import run_batches
from isp_search.export.locate import describe, locate_export
from isp_search.export.onnx_export import example_input, export_onnx
from isp_search.hashing import file_sha256
from isp_search.models.checkpoint import LoadedGenerator, load_generator
from isp_search.provenance import code_identity

N_CALIB = 8  # batches of real patches the int8 converter calibrates on

FORMATS = ("onnx", "tflite", "tflite_fp16", "tflite_int8")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model_fp32.tflite", "tflite_fp16": "model_fp16.tflite",
              "tflite_int8": "model_int8.tflite"}
LOCATE_MAX_PIXELS = 512 * 512  # above this a failing export is located on a 256x256 re-export (memory)


@dataclass
class ExportResult:
    passed: bool
    reason: str
    gates: dict
    paths: dict[str, str]
    sha256: dict[str, str]
    info: dict = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)


sha256 = file_sha256  # the name export rows and tests use


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


def data_identity(ds) -> dict:
    """What a number measured on ``ds`` (a RawRGBDataset) was measured on: format, root, split, count and a
    sha256 fingerprint of its RAW file list (names relative to the root), so two rows can be compared."""
    names = sorted(str(Path(s.raw_path).relative_to(ds.root)) for s in ds.listing.samples)
    return {"format": ds.format, "root": str(Path(ds.root).resolve()), "split": ds.split, "n_images": len(names),
            "fingerprint": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]}


def split_dataset(loaded: LoadedGenerator, root: str, fmt: str, splits: tuple[str, ...],
                  preset: str | None = None) -> RawRGBDataset:
    """The first of ``splits`` the data set has, as the model's inputs (no references)."""
    for split in splits:
        try:
            ds = RawRGBDataset(root, fmt, split, loaded.spec, preset=preset or loaded.preset, caching=Caching(with_reference=False))
        except UserError:
            continue
        if len(ds):
            return ds
    raise UserError(f"{root}: none of the splits {', '.join(splits)} has images for the export's real-data gates")


def real_batch(ds, shape: tuple[int, ...], n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` normalised network inputs from ``ds`` tiled to the export input ``shape`` (N, C, H, W), and the
    paired targets tiled to the output when the split has them."""
    items = [ds[i % len(ds)] for i in range(n)]
    x = torch.stack([_fit(it["input"], shape[1:]) for it in items])
    if not all("paired_target" in it for it in items):
        return x, None
    out_hw = (3, shape[2] * (2 if shape[1] == 4 else 1), shape[3] * (2 if shape[1] == 4 else 1))
    return x, torch.stack([_fit(it["paired_target"], out_hw) for it in items])


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def _default_calib() -> tuple[str, str]:
    root = Path(os.environ.get("ISP_SEARCH_CACHE", Path.home() / ".cache" / "isp-search")) / "synth_mai2022"
    ensure_synthetic(root, "mai2022")
    return str(root), "mai2022"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))


def preset_gate(loaded: LoadedGenerator, calib: tuple[str, str], shape: tuple[int, ...]) -> G.GateResult:
    """The export's input normalisation must be the one the weights were trained with (the checkpoint's, or the
    backbone's published preset for a paper state_dict); judged as PSNR of the two normalisations' outputs."""
    trained = loaded.meta.get("preset") or loaded.spec.preset
    if loaded.preset == trained:
        return G.GateResult("preset", True, None, None, f"{loaded.preset} (as trained)")
    ds_e, ds_t = (split_dataset(loaded, *calib, ("test", "val", "train"), p) for p in (loaded.preset, trained))
    with torch.no_grad():
        a, b = (loaded.model(real_batch(d, shape, 1)[0]).numpy() for d in (ds_e, ds_t))
    m = G.image_error(b, a)
    return G.GateResult("preset", False, m["psnr_db"], None,
                        f"input normalisation {loaded.preset!r} but the weights were trained with {trained!r}: real "
                        f"patches come out {m['psnr_db']:.1f} dB / {m['max_lsb']:.0f} LSB from the trained pipeline",
                        metrics=m)


def export_model(source: LoadedGenerator | str | os.PathLike, out_dir: str | os.PathLike,
                 formats: list[str] = FORMATS, size: tuple[int, int] = (1088, 1920),
                 calib: tuple[str, str] | None = None, arch: str | None = None, preset: str | None = None,
                 fold_dcr: bool = True) -> ExportResult:
    """Export ``source`` (a loaded generator, checkpoint, run folder or paper state_dict) and gate it.

    ``calib`` = (data root, format) supplies real patches: int8 calibrates on its train split, parity and the int8
    quality drop use a held-out split (test, else val). Without it the embedded synthetic set (built once under
    ``$ISP_SEARCH_CACHE``) is used, so every export is gated on real-looking RAW as well as on random input.
    ``preset`` overrides the normalisation (the preset gate refuses one the weights were not trained with);
    ``fold_dcr=False`` leaves the pixel shuffle as exported by PyTorch (the op gate refuses it).
    """
    # deferred: ONNX Runtime loads only where an ONNX file is run
    import onnxruntime as ort


    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source, arch=arch, preset=preset)
    out = Path(out_dir).resolve()  # export.json and leaderboard rows carry absolute artifact paths
    out.mkdir(parents=True, exist_ok=True)
    h, w = size
    model = loaded.model.eval().cpu()
    x_rand = example_input(loaded.spec, h, w, seed=1)
    calib = calib or _default_calib()
    held = split_dataset(loaded, *calib, ("test", "val"))
    x_held, t_held = real_batch(held, tuple(x_rand.shape), 2)
    inputs = {"random": x_rand, "real": x_held}
    with torch.no_grad():
        refs = {k: _nhwc(torch.cat([model(v[i : i + 1]) for i in range(len(v))])) for k, v in inputs.items()}

    report = G.GateReport([preset_gate(loaded, calib, tuple(x_rand.shape))])
    paths: dict[str, str] = {}
    info: dict = {"arch": loaded.spec.name, "preset": loaded.preset, "size": [h, w], "source": str(loaded.path),
                  "input": "normalised packed RAW, NHWC 1xH/2xW/2x4" if loaded.spec.input_layout == "packed"
                  else "normalised RGB planes, NHWC 1xHxWx3", "output": "RGB NHWC 1xHxWx3",
                  "real_data": data_identity(held), "parity_limits": {k: v and vars(v) for k, v in
                                                                       G.PARITY_LIMITS.items()},
                  **code_identity()}
    onnx_path = out / FILE_NAMES["onnx"]
    info["onnx"] = export_onnx(model, loaded.spec, onnx_path, h, w, fold_dcr=fold_dcr)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    if "onnx" in formats:
        paths["onnx"] = str(onnx_path)
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        outputs["onnx"] = {k: np.concatenate([sess.run(None, {"raw": x[i : i + 1].numpy()})[0]
                                              for i in range(len(x))]).transpose(0, 2, 3, 1) for k, x in inputs.items()}
        del sess  # its memory arena holds a whole forward pass at the export size
    tfl = [f for f in formats if f.startswith("tflite")]
    if tfl:
        int8_info = None
        calib_nhwc = None
        if "tflite_int8" in tfl:
            ds_cal = split_dataset(loaded, *calib, ("train",))
            calib_nhwc = _nhwc(real_batch(ds_cal, tuple(x_rand.shape), N_CALIB)[0])
            int8_info = data_identity(ds_cal)
        produced = T.convert(onnx_path, out, int8_calibration=calib_nhwc)
        del calib_nhwc
        if int8_info:
            info["int8_calibration"] = int8_info
        for fmt in tfl:
            p = produced[fmt]
            paths[fmt] = str(p)
            ops = T.op_list(p)
            info.setdefault("tflite_ops", {})[fmt] = ops
            blocking = fmt != "tflite_int8"
            report.gates.append(G.op_gate(fmt, ops, T.tensor_ranks(p), info["onnx"]["dcr_folds"]))
            report.gates.append(G.analyzer_gate(fmt, p, out / f"gpu_analyzer_{Path(p).stem}.txt"))
            for g in report.gates[-2:]:
                g.blocking = blocking
            batches = {k: _nhwc(x) for k, x in inputs.items()}
            try:  # in a child process: LiteRT's tensors at Full HD must not add to this process's peak
                outputs[fmt] = run_batches(p, batches, threads=2)
            except RuntimeError as e:  # XNNPACK refuses some int8 graphs; the reference kernels still run them
                report.gates.append(G.GateResult(f"xnnpack/{fmt}", False, None, None,
                                                 f"XNNPACK cannot run it: {str(e).splitlines()[0][:120]}",
                                                 blocking=blocking))
                if blocking:
                    continue
                outputs[fmt] = run_batches(p, batches, plain=True)
        if "onnx" not in formats:
            paths.pop("onnx", None)
    for fmt, outs in outputs.items():
        for kind in inputs:
            g = G.parity_gate(fmt, kind, refs[kind], outs[kind])
            if fmt == "tflite_int8" and kind == "real" and t_held is not None:
                tgt = _nhwc(t_held)
                g.metrics["quality_drop_db"] = _psnr(refs["real"], tgt) - _psnr(outs["real"], tgt)
                g.detail += f"; {g.metrics['quality_drop_db']:.2f} dB below PyTorch against the targets"
            report.gates.append(g)
    failing = [g for g in report.failed if g.name.startswith("parity/") and not g.metrics.get("non_finite")]
    if failing:
        fmt, kind = failing[0].name.split("/")[1:]
        found = _locate(loaded, fmt, kind, inputs[kind][:1], onnx_path, paths.get(fmt), fold_dcr, size)

        failing[0].located = found
        failing[0].detail += f"; {describe(found)}"
    if "onnx" not in formats:
        onnx_path.unlink(missing_ok=True)
    digests = {k: sha256(v) for k, v in paths.items()}
    sizes = {k: Path(v).stat().st_size for k, v in paths.items()}
    result = ExportResult(report.passed, report.reason, report.as_dict(), paths, digests, info, sizes)
    doc = {"passed": result.passed, "reason": result.reason, "gates": result.gates, "artifacts": paths,
           "sha256": digests, "bytes": sizes, **info}
    tmp = out / "export.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, out / "export.json")
    return result


def _locate(loaded: LoadedGenerator, fmt: str, kind: str, x: torch.Tensor, onnx_path: Path, path: str | None,
            fold_dcr: bool, size: tuple[int, int]) -> dict:
    """Per-op location of a parity failure, at the export size or (large exports) on a 256x256 re-export."""

    model = loaded.model.eval()
    if size[0] * size[1] <= LOCATE_MAX_PIXELS:
        return locate_export(model, x, onnx_path, path if fmt.startswith("tflite") else None)
    small = example_input(loaded.spec, 256, 256, seed=1) if kind == "random" else x[..., :128, :128] \
        if loaded.spec.input_layout == "packed" else x[..., :256, :256]
    with tempfile.TemporaryDirectory(prefix="isp-locate-") as tmp:
        o = Path(tmp) / "model.onnx"
        export_onnx(model, loaded.spec, o, 256, 256, fold_dcr=fold_dcr)
        t = T.convert(o, tmp)[fmt] if fmt in ("tflite", "tflite_fp16") else None
        found = locate_export(model, small, o, t)
    return {**found, "note": "located on a 256x256 re-export of the same graph"}
