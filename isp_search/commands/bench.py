"""``isp-search bench``: latency of an exported model on this CPU (LiteRT, ONNX Runtime, PyTorch) or a phone."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from isp_search.errors import UserError
from isp_search.export import adb, qaihub
from isp_search.export import bench as B
from isp_search.export.floor import compute_floor
from isp_search.export.pipeline import export_model, parse_size, sha256
from isp_search.export.publish import mobile_targets, preflight
from isp_search.export.tflite_export import interpreter
from isp_search.models.checkpoint import load_generator


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="measure latency: LiteRT/XNNPACK, ONNX Runtime and PyTorch on CPU, or a phone over adb",
        description="MODEL is a .tflite file, an export folder, a checkpoint or a run folder (exported on the fly "
        "at --size). CPU: warm-up, repeated runs, median and 10th/90th percentiles. adb: TFLite benchmark_model "
        "with the GPU delegate (FP16 allowed).")
    p.add_argument("model", metavar="MODEL", help=".tflite, export folder, checkpoint or run folder")
    p.add_argument("--target", default="cpu",
                   help="cpu, adb[:SERIAL] (an Android phone over adb) or qai-hub:DEVICE (a phone in Qualcomm AI Hub); "
                   "phones run the fp16 file on their GPU (default: cpu)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    p.add_argument("--runs", type=int, default=20, help="timed runs (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs (default: 3)")
    p.add_argument("--size", default=None,
                   help="full output size HxW; a checkpoint is exported at it (default: MAI 1088x1920), an export "
                   "folder made at another size is re-exported from its source (default: the folder's own size)")
    p.add_argument("--arch", default=None, help="backbone name for a paper-format state_dict")
    p.add_argument("--benchmark-binary", default=None, help="path of TFLite's benchmark_model for the phone (adb)")
    p.add_argument("--force", action="store_true", help="time an export folder whose gates refused it")
    p.add_argument("--json", action="store_true", help="print one JSON object (the TFLite result and the others)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    src = Path(args.model)
    if not src.exists():
        raise UserError(f"{src}: no such model file or folder")
    mobile = args.target != "cpu"
    if mobile:  # fail in seconds, before any export

        preflight(mobile_targets([args.target]), {"benchmark_binary": args.benchmark_binary})
    tflite = onnx = None
    loaded = None
    size = parse_size(args.size) if args.size else None
    if src.suffix == ".tflite":
        if size:
            raise UserError(f"--size: {src} has a fixed input shape; pass its export folder or checkpoint instead")
        sibling = src.parent / "export.json"
        if sibling.is_file() and json.loads(sibling.read_text()).get("passed") is False and not args.force:
            raise UserError(f"{src}: its export was refused by its gates (see {sibling}); pass --force to time it")
        tflite = src
    elif src.is_dir() and (src / "model_fp32.tflite").is_file():
        meta = json.loads((src / "export.json").read_text()) if (src / "export.json").is_file() else {}
        if meta.get("passed") is False and not args.force:
            raise UserError(f"{src}: this export was refused by its gates ({meta.get('reason')}); "
                            "pass --force to time it anyway")
        if size and tuple(meta.get("size") or ()) != size:
            if not meta.get("source"):
                raise UserError(f"--size: {src} was exported at another size and names no source to re-export")

            loaded = load_generator(meta["source"], arch=meta.get("arch"))
        else:
            tflite, onnx = src / "model_fp32.tflite", src / "model.onnx"
            if mobile:
                if not (src / "model_fp16.tflite").is_file():
                    raise UserError(f"{src}: no model_fp16.tflite (a phone runs the fp16 file); re-export with "
                                    "--formats including tflite_fp16")
                tflite = src / "model_fp16.tflite"
    if tflite is None:


        loaded = loaded or load_generator(src, arch=args.arch)
        out = Path(tempfile.mkdtemp(prefix="isp-bench-"))
        r = export_model(loaded, out, ["onnx", "tflite"] + (["tflite_fp16"] if mobile else []), size or (1088, 1920))
        if not r.passed and not args.force:
            raise UserError(f"{src}: export failed its gates: {r.reason}")
        tflite, onnx = out / ("model_fp16.tflite" if mobile else "model_fp32.tflite"), out / "model.onnx"
    if mobile:
        return _run_mobile(args, tflite)
    res = B.bench_tflite(tflite, args.threads, args.runs, args.warmup)
    res["precision"] = _precision(tflite)
    others = []
    if tflite.name == "model_fp32.tflite":  # the export folder's other LiteRT files, side by side
        for sibling in (tflite.with_name("model_fp16.tflite"), tflite.with_name("model_int8.tflite")):
            if sibling.is_file():
                others.append(B.bench_tflite(sibling, args.threads, args.runs, args.warmup)
                              | {"precision": _precision(sibling)})
    if onnx is not None and Path(onnx).is_file():
        others.append(B.bench_onnx(onnx, args.threads, args.runs, args.warmup))
    if loaded is None and src.is_dir():
        export_json = src / "export.json"
        if export_json.is_file():
            meta = json.loads(export_json.read_text())
            try:
                loaded = load_generator(meta["source"], arch=meta.get("arch"))
            except UserError:
                loaded = None
    if loaded is not None:
        shape = tuple(res["input_shape"])
        nchw = (shape[0], shape[3], shape[1], shape[2])
        others.append(B.bench_torch(loaded.model, nchw, args.threads, args.runs, args.warmup))

    floor = compute_floor(tflite, args.threads)  # measured now, on the same threads, as the runtimes were
    for r in [res] + others:  # the best run beside the best SGEMM: both as little disturbed as this CPU allows
        r["x_floor"], r["best_x_floor"] = r["median_ms"] / floor["floor_ms"], r["min_ms"] / floor["floor_ms"]
    if args.json:
        print(json.dumps({**res, "comparison": others, "floor": floor}))
    else:
        print(f"input {res['input_shape']} (NHWC), {args.threads} threads, {args.runs} runs, {res['host_cpu']}")
        print(f"compute floor {floor['floor_ms']:.2f} ms = 2 x {floor['macs'] / 1e9:.3g} GMAC / "
              f"{floor['gflops']:.0f} GFLOP/s ({floor['method']}, {floor['threads']} threads)")
        print(f"{'runtime':<22}{'median ms':>10}{'p10 ms':>10}{'p90 ms':>10}{'x floor':>9}{'best x':>8}")
        for r in [res] + others:
            name = r["runtime"] + (f" {r['precision']}" if r.get("precision") else "")
            print(f"{name:<22}{r['median_ms']:>10.2f}{r['p10_ms']:>10.2f}{r['p90_ms']:>10.2f}{r['x_floor']:>9.2f}"
                  f"{r['best_x_floor']:>8.2f}")
    return 0


def _precision(tflite: Path) -> str:
    """fp32 / fp16 / int8 from the export's file name (model_fp16.tflite), else the file's own name."""
    stem = tflite.stem
    return stem.split("_", 1)[1] if stem.startswith("model_") else stem


def _run_mobile(args: argparse.Namespace, tflite: Path) -> int:
    """Time the fp16 file on a phone (adb) or a device-cloud phone (qai-hub) and print one line."""

    if args.target.startswith("adb"):
        res = adb.bench_adb(tflite, args.benchmark_binary, serial=adb.parse_target(args.target), runs=args.runs,
                            warmup=args.warmup)
    else:
        res = qaihub.bench_qaihub(tflite, qaihub.parse_target(args.target),
                                  "x".join(map(str, _output_size(tflite))))
    res["sha256"] = sha256(tflite)
    if args.json:
        print(json.dumps(res, default=str))
        return 0
    ms = res["median_ms"] if res.get("median_ms") is not None else res.get("mean_ms")
    stat = res.get("statistic", "median")
    print(f"{res['target']} {res.get('device') or ''} {res.get('soc') or ''} ({res['delegate']}, "
          f"{res.get('precision')}): {ms:.2f} ms {stat} over {res.get('runs')} runs; init {res.get('init_ms')} ms; "
          f"{tflite.name} sha256 {res['sha256'][:12]}")
    return 0


def _output_size(tflite: Path) -> tuple[int, int]:
    shape = interpreter(tflite).get_output_details()[0]["shape"]
    return int(shape[1]), int(shape[2])
