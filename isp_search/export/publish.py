"""Export -> gate -> benchmark -> leaderboard row, for a trained model or an external baseline checkpoint.

Nothing is appended until every stage has passed: a refused export or a failed benchmark leaves no row.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from isp_search.data.dataset import Caching, RawRGBDataset
from isp_search.data.io import write_rgb
from isp_search.errors import UserError
from isp_search.export import adb as adb_mod
from isp_search.export import leaderboard as LB
from isp_search.export import qaihub
from isp_search.export.bench import bench_tflite
from isp_search.export.onnx_export import example_input
from isp_search.export.pipeline import ExportResult, data_identity, export_model, sha256, split_dataset
from isp_search.export.settings import ExportSettings, Provenance
from isp_search.metrics import evaluate_model
from isp_search.models.checkpoint import LoadedGenerator, load_generator
from isp_search.provenance import code_identity


@dataclass
class Published:
    model_id: str
    export: ExportResult | None
    row: dict | None  # None when a gate failed or the weights are on the leaderboard already
    duplicate_of: str | None = None  # the row that already holds these deployed weights


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of the generator's weights (names and values in order): what is deployed, whatever the file."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def on_leaderboard(digest: str, deploy_size: tuple[int, int], path: str | os.PathLike | None) -> str | None:
    """The model id of a row holding the same weights deployed at the same size, if any."""
    size = f"{deploy_size[0]}x{deploy_size[1]}"
    for row in LB.read(path).select(["model_id", "weights_sha256", "deploy_size"]).to_pylist():
        if row["weights_sha256"] == digest and row["deploy_size"] == size:
            return row["model_id"]
    return None


def count_macs(model: torch.nn.Module, spec, height: int, width: int) -> int:
    """Multiply-accumulates of the convolutions and linear layers in one forward pass at ``height`` x ``width``.

    Counted with forward hooks on the meta device (no compute). torch's FlopCounterMode is not used here because
    importing it pulls in triton, which crashes in a process that has loaded TensorFlow for the export.
    """

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

    try:
        ds = RawRGBDataset(data_root, data_format, split, loaded.spec, preset=loaded.preset, caching=Caching(with_reference=False))
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


def _latency_entry(res: dict, size: tuple[int, int], model: str) -> dict:
    """A bench result as a leaderboard latency entry, naming the file timed and its sha256."""

    entry = {k: v for k, v in res.items() if k in LB.LATENCY.names}
    entry.setdefault("statistic", "median" if res.get("median_ms") is not None else "mean")
    entry.update(size=f"{size[0]}x{size[1]}", model=str(model), sha256=sha256(model))
    return entry


def mobile_targets(targets) -> list[str]:
    """Validate ``adb[:SERIAL]`` / ``qai-hub:DEVICE`` targets (``cpu`` is always timed and dropped here)."""
    out = []
    for t in targets or ():
        if t == "cpu":
            continue
        if t == "adb" or t.startswith("adb:"):
            adb_mod.parse_target(t)
        elif t.startswith("qai-hub"):
            qaihub.parse_target(t)
        else:
            raise UserError(f"latency target {t!r}: valid: cpu, adb, adb:SERIAL, qai-hub:DEVICE")
        out.append(t)
    return out


def preflight(targets: list[str], adb: dict | None) -> None:
    """Fail in seconds, not after minutes of export: adb and its binary, or a qai-hub token."""
    for t in targets:
        if t.startswith("adb"):
            adb_mod.check_adb((adb or {}).get("benchmark_binary"))
        else:
            qaihub.check_token()


def _time_mobile(target: str, fp16: str, size: tuple[int, int], adb: dict | None) -> dict:
    if target.startswith("adb"):
        a = {k: v for k, v in (adb or {}).items() if k != "serial"}
        res = adb_mod.bench_adb(fp16, serial=adb_mod.parse_target(target), **a)
    else:
        res = qaihub.bench_qaihub(fp16, qaihub.parse_target(target), f"{size[0]}x{size[1]}")
    return _latency_entry(res, size, fp16)


def _parity_columns(gates: dict, suffix: str = "") -> list[dict]:
    out = []
    for name, g in gates.items():
        if name.startswith("parity/") and g.get("psnr_db") is not None:
            _, fmt, kind = name.split("/")
            out.append({"format": fmt, "kind": kind + suffix, "psnr_db": g["psnr_db"], "max_lsb": g["max_lsb"],
                        "max_abs": g["max_abs"], "passed": g["passed"], "blocking": g["blocking"],
                        "quality_drop_db": g.get("quality_drop_db")})
    return out


def _eval_identity(data: tuple[str, str] | None, split: str, loaded: LoadedGenerator) -> dict:
    if data is None:
        return {}
    try:
        return data_identity(split_dataset(loaded, data[0], data[1], (split,)))
    except UserError:
        return {"format": data[1], "root": str(Path(data[0]).resolve()), "split": split}


def publish(source: LoadedGenerator | str | os.PathLike, out_dir: str | os.PathLike, settings: ExportSettings,
            provenance: Provenance, *, data: tuple[str, str] | None = None, metrics: dict | None = None,
            weights_mode: str = "pretrained", leaderboard_path: str | os.PathLike | None = None,
            seeds: dict | None = None) -> Published:
    """Export at ``settings.deploy_size`` and gate; if every gate passes, benchmark and append one leaderboard row.

    The row's artifacts are the deployed (gated and timed) files. ``settings.gate_size`` adds a second, gate-only
    export (e.g. real patches at their own 256x256) that must pass too. Phone targets time the fp16 file on the
    phone's GPU; the CPU (LiteRT fp32) is always timed. ``metrics`` are the model's quality as measured by its
    run (the row names their split); without them, ``data``'s test split is evaluated here with ``weights_mode``
    (pretrained | random) LPIPS/DISTS backbones. ``seeds`` ({n, mean, sd}, keys like ``val/lpips``) are the
    configuration's values over several training seeds (a search's confirmation stage); the row carries them.
    A refusal at any stage returns ``row=None`` and appends nothing.
    """
    targets = mobile_targets(settings.targets)
    adb = settings.adb
    preflight(targets, adb)
    loaded = source if isinstance(source, LoadedGenerator) else load_generator(source)
    out = Path(out_dir).resolve()  # rows point at artifacts from anywhere
    prov = provenance
    model_id = prov.model_id or (f"{prov.search_id}/{prov.trial_id}" if prov.search_id and prov.trial_id
                                 else out.name)
    size, gate_size = tuple(settings.deploy_size), settings.gate_size
    digest = weights_digest(loaded.model)
    if (same := on_leaderboard(digest, size, leaderboard_path)) is not None:  # nothing exported or timed again
        LB.add_same_weights(same, model_id, leaderboard_path)  # that row names this model too
        return Published(same, None, None, duplicate_of=same)
    formats = list(dict.fromkeys([*settings.formats, "tflite"] + (["tflite_fp16"] if targets else [])))  # timed
    parity: list[dict] = []
    if gate_size and tuple(gate_size) != size:
        gate = export_model(loaded, out / f"gate_{gate_size[0]}x{gate_size[1]}", [f for f in formats
                                                                                if f != "tflite_int8"],
                            tuple(gate_size), calib=data)
        if not gate.passed:
            return Published(model_id, gate, None)
        parity = _parity_columns(gate.gates, f" {gate_size[0]}x{gate_size[1]}")
    result = export_model(loaded, out, formats, tuple(size), calib=data)
    if not result.passed:
        return Published(model_id, result, None)
    if metrics is None and data is not None:
        ds = RawRGBDataset(data[0], data[1], "test", loaded.spec, preset=loaded.preset, caching=Caching(with_reference=False))
        metrics = {**evaluate_model(loaded.model, loaded.spec, ds, weights_mode=weights_mode), "split": "test"}
    metrics = dict(metrics or {})
    if metrics.get("lpips") is not None and not metrics.get("lpips_weights"):
        # metrics handed over from training: the checkpoint says which feature weights its LPIPS used
        metrics["lpips_weights"] = loaded.meta.get("backbone_weights")
    mode = prov.mode or loaded.meta.get("mode")
    mai_c = settings.mai_c
    fp32 = result.paths["tflite"]
    latency = [_latency_entry(bench_tflite(fp32, threads=settings.threads, runs=settings.runs), size, fp32)]
    latency[0]["precision"] = "fp32"
    latency += [_time_mobile(t, result.paths["tflite_fp16"], size, adb) for t in targets]
    primary = next((e for e in latency if LB.is_mobile(e["target"])), latency[0])
    primary_ms = primary.get("median_ms") if primary.get("median_ms") is not None else primary.get("mean_ms")
    crops = save_crops(loaded, *data, out) if data else (None, None)
    parity = _parity_columns(result.gates) + parity
    blocking = [p for p in parity if p["blocking"]]
    int8 = next((p for p in parity if p["format"] == "tflite_int8" and p["kind"] == "real"), None)
    psnr = metrics.get("psnr")
    split = metrics.get("split", "test")
    ident = _eval_identity(data, split, loaded) if psnr is not None or metrics.get("lpips") is not None else {}
    mobile = LB.is_mobile(primary["target"])
    row = {
        "model_id": model_id, "kind": prov.kind, "backbone": loaded.spec.name, "mode": mode,
        "preset": loaded.preset, "search_id": prov.search_id, "trial_id": prov.trial_id, "config": dict(prov.config),
        "params": sum(p.numel() for p in loaded.model.parameters()),
        "macs": count_macs(loaded.model, loaded.spec, *size), "macs_size": f"{size[0]}x{size[1]}",
        "psnr": psnr, "ssim": metrics.get("ssim"), "ms_ssim": metrics.get("ms_ssim"), "lpips": metrics.get("lpips"),
        "dists": metrics.get("dists"), "lpips_weights": metrics.get("lpips_weights"),
        "data_format": ident.get("format"), "data_root": ident.get("root"), "eval_split": split if ident else None,
        "n_test_images": metrics.get("n_images") or ident.get("n_images"), "data_fingerprint": ident.get("fingerprint"),
        "latency": latency, "latency_ms": primary_ms, "latency_target": primary["target"],
        "latency_statistic": primary.get("statistic"),
        "mai_score": LB.mai_score(psnr, primary_ms, mai_c) if mobile else None, "mai_c": mai_c,
        "mai_target": primary["target"] if mobile else None,
        "parity": parity, "parity_min_psnr_db": min((p["psnr_db"] for p in blocking), default=None),
        "parity_max_lsb": max((p["max_lsb"] for p in blocking), default=None),
        "int8_psnr_db": int8 and int8["psnr_db"], "int8_quality_drop_db": int8 and int8["quality_drop_db"],
        "artifacts": result.paths, "sha256": result.sha256, "artifact_bytes": result.bytes,
        "deploy_size": f"{size[0]}x{size[1]}", "gate_size": f"{gate_size[0]}x{gate_size[1]}" if gate_size else None,
        "n_seeds": (seeds or {}).get("n"), "seed_mean": (seeds or {}).get("mean"), "seed_sd": (seeds or {}).get("sd"),
        "weights_sha256": digest, "sample_crop": crops[0], "target_crop": crops[1], **code_identity(), "run_dir": prov.run_dir,
    }
    LB.append_rows([row], leaderboard_path)
    (out / "leaderboard_row.json").write_text(json.dumps(LB.normalise_row(row), default=str, indent=1))
    return Published(model_id, result, row)
