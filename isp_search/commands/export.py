"""``isp-search export``: a checkpoint, run folder or paper state_dict -> ONNX + TFLite, gated."""

from __future__ import annotations

import argparse
import json
import sys

from isp_search.export.pipeline import export_model, parse_formats, parse_size


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX and TFLite (fp32/fp16/int8) with parity and op-list gates",
        description="Export to ONNX (static shape, pixel shuffle as DCR DepthToSpace) and TFLite via onnx2tf. "
        "Input: normalised packed RAW (1 x H/2 x W/2 x 4, NHWC in TFLite); output RGB 1 x H x W x 3. Writes "
        "model.onnx, model_fp32.tflite, model_fp16.tflite, model_int8.tflite and export.json into --out. Gates: parity "
        "against PyTorch as PSNR and 8-bit LSB on random input and real held-out patches, the GPU op list, "
        "TensorFlow's GPU-delegate analyser and the normalisation preset; a failing parity gate says which op the "
        "error starts at.")
    p.add_argument("source", metavar="CHECKPOINT_OR_RUN", help="our checkpoint, a run folder, or a paper state_dict")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", default="onnx,tflite,tflite_fp16,tflite_int8",
                   help="comma list of onnx, tflite, tflite_fp16, tflite_int8 (default: all four; int8 is calibrated "
                   "on the train split of --calib-data and judged on its held-out split)")
    p.add_argument("--size", default="1088x1920", help="full RAW/RGB size HxW, multiples of 4 (default: 1088x1920)")
    p.add_argument("--arch", default=None, help="backbone name, needed only for a paper-format state_dict")
    p.add_argument("--preset", default=None,
                   help="input normalisation override (refused unless it is the one the weights were trained with)")
    p.add_argument("--calib-data", default=None,
                   help="data set root whose patches calibrate int8 and check parity on real data "
                   "(default: the embedded synthetic set)")
    p.add_argument("--calib-format", default="mai2022", help="format of --calib-data (default: mai2022)")
    p.add_argument("--json", action="store_true", help="print export.json's content instead of a summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    formats = parse_formats(args.formats)
    size = parse_size(args.size)
    calib = (args.calib_data, args.calib_format) if args.calib_data else None
    r = export_model(args.source, args.out, formats, size, calib=calib, arch=args.arch, preset=args.preset)
    if args.json:
        print(json.dumps({"passed": r.passed, "reason": r.reason, "gates": r.gates, "artifacts": r.paths,
                          "sha256": r.sha256, "bytes": r.bytes}, indent=1, default=str))
    else:
        for name, g in r.gates.items():
            print(f"{'ok  ' if g['passed'] else ('FAIL' if g['blocking'] else 'note')} {name}: {g['detail']}")
        for k, v in r.paths.items():
            print(f"wrote {k}: {v} ({r.bytes[k]} bytes, sha256 {r.sha256[k][:12]})")
    if not r.passed:
        print(f"isp-search: export refused: {r.reason} (details: {args.out}/export.json)", file=sys.stderr)
        return 1
    return 0
