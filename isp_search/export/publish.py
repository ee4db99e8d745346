"""Export -> gate -> benchmark -> leaderboard row, for a trained model or an external baseline checkpoint."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isp_search.errors import UserError
from isp_search.export import leaderboard as LB
from isp_search.export.bench import bench_tflite
from isp_search.export.onnx_export import example_input
from isp_search.export.pipeline import ExportResult, export_model
from isp_search.models.checkpoint import LoadedGenerator, load_generator


@dataclass
class Published:
    model_id: str
    export: ExportResult
    row: dict | None  # None when a gate failed: the model never reaches the leaderboard


def count_macs(model: torch.nn.Module, spec, height: int, width: int) -> int:
    """Multiply-accumulates of the convolutions and linear layers in one forward pass at ``height`` x ``width``.

    Counted with forward hooks on the meta device (no compute). torch's FlopCounterMode is not used here because
    importing it pulls in triton, which crashes in a process that has loaded TensorFlow for the export.
    """
    import copy

    m = copy.deepcopy(model).to("meta").eval()
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += output.numel() * k
        elif isinstance(mod, torch.nn.Linear):
            total += output.numel() * mod.in_features

    handles = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        m(example_input(spec, height, width).to("meta"))
    for h in handles:
        h.remove()
    return int(total)


def save_crops(loaded: LoadedGenerator, data_root: str, data_format: str, out_dir: Path, crop: int = 96,
               split: str = "test") -> tuple[str | None, str | None]:
    """Run the model on the first test image and save a centre crop of its output and of the target as PNG."""
    from isp_search.data.dataset import RawRGBDataset
    from isp_search.data.io import write_rgb

    try:
        ds = RawRGBDataset(data_root, data_format, split, loaded.spec, preset=loaded.preset, with_reference=False)
    except Exception:  # no test split with targets: no crops, the row still stands
        return None, None
    if len(ds) == 0:
        return None, None
    item = ds[0]
    with torch.no_grad():
        out = loaded.model(item["input"][None].float())[0].clamp(0, 1).permute(1, 2, 0).numpy()
    h, w = out.shape[:2]
    c = min(crop, h, w)
    y0, x0 = (h - c) // 2, (w - c) // 2
    s = out_dir / "sample_output.png"
    write_rgb(s, out[y0 : y0 + c, x0 : x0 + c])
    t = None
    if "paired_target" in item:
        tgt = item["paired_target"].permute(1, 2, 0).numpy()
        t = out_dir / "sample_target.png"
        write_rgb(t, tgt[y0 : y0 + c, x0 : x0 + c])
    return str(s), str(t) if t else None


def publish(source: LoadedGenerator | str | os.PathLike, out_dir: str | os.PathLike, *, arch: str | None = None,
            formats=("onnx", "tflite", "tflite_fp16"), export_size=(256, 256), bench_size=(1088, 1920),
            data: tuple[str, str] | None = None, metrics: dict | None = None, kind: str = "search",
            mode: str | None = None, search_id: str | None = None, trial_id: str | None = None,
            config: dict | None = None, run_dir: str | None = None, bench_runs: int = 10, threads: int = 2,
            mai_c: float = 1.0, leaderboard_path: str | os.PathLike | None = None, model_id: str | None = None,
            adb: dict | None = None, weights_mode: str = "pretrained") -> Published:
    """Export and gate; if every gate passes, benchmark and append one leaderboard row.

    ``weights_mode`` (pretrained | random) picks the LPIPS/DISTS backbones when ``data`` is evaluated here; ``adb``
    holds :func:`bench_adb` arguments (benchmark_binary, serial, runs, warmup) for an on-phone GPU timing.
    """
    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source, arch=arch)
    out = Path(out_dir).resolve()  # rows point at artifacts from anywhere
    model_id = model_id or (f"{search_id}/{trial_id}" if search_id and trial_id else out.name)
    result = export_model(loaded, out, list(formats), export_size, calib=data)
    if not result.passed:
        return Published(model_id, result, None)
    if metrics is None and data is not None:
        from isp_search.metrics import evaluate_model
        from isp_search.data.dataset import RawRGBDataset

        ds = RawRGBDataset(data[0], data[1], "test", loaded.spec, preset=loaded.preset, with_reference=False)
        metrics = evaluate_model(loaded.model, loaded.spec, ds, weights_mode=weights_mode)
    metrics = dict(metrics or {})
    if metrics.get("lpips") is not None and not metrics.get("lpips_weights"):
        # metrics handed over from training: the checkpoint says which feature weights its LPIPS used
        metrics["lpips_weights"] = loaded.meta.get("backbone_weights")
    mode = mode or loaded.meta.get("mode")
    latency = []
    if bench_size:
        bench_dir = out / "bench"
        # the phone runs the fp16 graph (MAI protocol: GPU delegate, FP16 allowed) at the benchmark size too
        bench_res = export_model(loaded, bench_dir, ["tflite", "tflite_fp16"] if adb else ["tflite"], bench_size)
        if bench_res.passed:
            b = bench_tflite(bench_res.paths["tflite"], threads=threads, runs=bench_runs)
            latency.append({"target": "cpu", "runtime": b["runtime"], "median_ms": b["median_ms"],
                            "p10_ms": b["p10_ms"], "p90_ms": b["p90_ms"], "threads": threads,
                            "device": os.uname().machine, "delegate": "xnnpack",
                            "size": f"{bench_size[0]}x{bench_size[1]}"})
    if adb:
        from isp_search.export.bench import bench_adb

        if not bench_size or not bench_res.passed:
            raise UserError("adb benchmark: needs a benchmark size whose export passes its gates")
        a = bench_adb(bench_res.paths["tflite_fp16"], **adb)
        latency.append({"target": a["target"], "runtime": "benchmark_model", "median_ms": a["median_ms"],
                        "device": a.get("device"), "delegate": a.get("delegate"),
                        "size": f"{bench_size[0]}x{bench_size[1]}"})
    primary = latency[-1] if latency else None
    crops = save_crops(loaded, *data, out) if data else (None, None)
    parity = {k: v["value"] for k, v in result.gates.items() if k.startswith("parity/")}
    psnr = metrics.get("psnr")
    row = {
        "model_id": model_id, "kind": kind, "backbone": loaded.spec.name, "mode": mode, "preset": loaded.preset,
        "search_id": search_id, "trial_id": trial_id, "config": config or {},
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "macs": count_macs(loaded.model, loaded.spec, *bench_size) if bench_size else None,
        "macs_size": f"{bench_size[0]}x{bench_size[1]}" if bench_size else None,
        "psnr": psnr, "ssim": metrics.get("ssim"), "ms_ssim": metrics.get("ms_ssim"), "lpips": metrics.get("lpips"),
        "dists": metrics.get("dists"), "n_test_images": metrics.get("n_images"),
        "eval_split": metrics.get("split", "test"), "lpips_weights": metrics.get("lpips_weights"),
        "latency": latency, "latency_ms": primary["median_ms"] if primary else None,
        "latency_target": primary["target"] if primary else None,
        "mai_score": LB.mai_score(psnr, primary["median_ms"] if primary else None, mai_c), "mai_c": mai_c,
        "parity": parity, "artifacts": result.paths, "sha256": result.sha256,
        "sample_crop": crops[0], "target_crop": crops[1], "git_sha": LB.git_sha(), "run_dir": run_dir,
    }
    LB.append_rows([row], leaderboard_path)
    (out / "leaderboard_row.json").write_text(json.dumps(LB.normalise_row(row), default=str, indent=1))
    return Published(model_id, result, row)
