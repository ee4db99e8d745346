"""``isp-search leaderboard``: show the table of exported models (Pareto front marked), or add a baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from isp_search.errors import UserError
from isp_search.export import leaderboard as LB
from isp_search.export.pipeline import parse_formats, parse_size
from isp_search.export.publish import publish
from isp_search.export.report import COLUMNS, DEFAULT_OBJECTIVES, write_report
from isp_search.export.settings import ExportSettings, Provenance
from isp_search.metrics import direction
from isp_search.models.checkpoint import load_generator


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard", help="show the leaderboard of exported models, write its HTML report, or add a baseline",
        description="Read the Parquet leaderboard (default results/leaderboard.parquet or $ISP_SEARCH_LEADERBOARD) "
        "and show it with the Pareto front (LPIPS down, PSNR up, latency down) marked.")
    p.add_argument("--path", default=None, help="leaderboard Parquet file")
    p.add_argument("--sort", default="lpips", help="column to sort by; its direction is the metric's (default: lpips)")
    p.add_argument("--top", type=int, default=None, help="show only the first K rows after sorting")
    p.add_argument("--format", choices=("table", "json", "md", "html"), default="table", help="output format")
    p.add_argument("--out", default=None, help="write to this file (html default: results/leaderboard.html)")
    p.set_defaults(func=run_show)
    sub = p.add_subparsers(dest="lb_command", metavar="ACTION")
    # allow_abbrev=False: `--format` must not silently mean --formats (nor --data-format)
    add = sub.add_parser("add", allow_abbrev=False, help="evaluate, export, benchmark and add an external checkpoint as a baseline row",
                         description="For a checkpoint not trained by a search (e.g. the paper's published weights). "
                         "The model is exported at --deploy-size (default Full HD), gated, timed and added; a model refused "
                         "at any stage gets no row and the command exits 1 naming the reason.")
    add.add_argument("--arch", default=None, help="backbone name (needed for a paper-format state_dict)")
    add.add_argument("--weights", required=True, help="checkpoint file, run folder or paper state_dict")
    add.add_argument("--data", default=None, help="data set root for the test-split metrics and sample crops")
    add.add_argument("--data-format", dest="data_format", default="mai2022", help="format of --data (default: mai2022)")
    add.add_argument("--formats", default="onnx,tflite,tflite_fp16",
                     help="deployed files: comma list of onnx, tflite, tflite_fp16, tflite_int8 (tflite is always "
                     "made: it is timed; default: onnx,tflite,tflite_fp16)")
    add.add_argument("--deploy-size", default="1088x1920",
                     help="deployed export, latency and MACs size HxW (default: 1088x1920)")
    add.add_argument("--gate-size", default=None, help="also gate an export at this size HxW (e.g. 256x256)")
    add.add_argument("--name", default=None, help="model id in the table (default: baseline/<file name>)")
    add.add_argument("--out", dest="export_dir", default=None, help="artifact folder (default: results/exports/<name>)")
    # SUPPRESS: `leaderboard --path X add` and `leaderboard add --path X` both work (a None default would overwrite X)
    add.add_argument("--path", default=argparse.SUPPRESS, help="leaderboard Parquet file (also accepted before add)")
    add.add_argument("--mai-c", type=float, default=1.0, help="C in the MAI score 2^(2 PSNR)/(C runtime)")
    add.add_argument("--backbone-weights", choices=("pretrained", "random"), default="pretrained",
                     help="LPIPS/DISTS feature networks: pretrained (local files, see `isp-search weights`) or "
                     "random (offline; the row is labelled so) (default: pretrained)")
    add.add_argument("--target", action="append", default=None, metavar="TARGET",
                     help="also time the fp16 file on a phone GPU: adb, adb:SERIAL (needs --benchmark-binary) or "
                     "qai-hub:DEVICE (Qualcomm AI Hub; needs the qai-hub client and its token); repeatable. The CPU "
                     "is always timed; the MAI score comes only from a phone target")
    add.add_argument("--benchmark-binary", default=None, help="TFLite benchmark_model binary for the phone (adb)")
    add.add_argument("--runs", type=int, default=10, help="timed runs per target (default: 10)")
    add.set_defaults(func=run_add)


def _rows(path) -> list[dict]:
    return LB.read(path).to_pylist()


def _direction(col: str) -> str:
    try:
        return direction(col)
    except Exception:  # columns that are not metrics
        return "min" if col in ("lpips", "dists", "latency_ms", "params", "macs") else "max"


def run_show(args: argparse.Namespace) -> int:
    rows = _rows(args.path)
    if rows and args.sort not in rows[0]:
        raise UserError(f"--sort {args.sort!r}: not a column; valid: {', '.join(rows[0])}")
    front = LB.pareto_front(rows, {k: _direction(k) for k in DEFAULT_OBJECTIVES})
    d = _direction(args.sort)
    order = sorted(range(len(rows)), key=lambda i: (rows[i].get(args.sort) is None,
                                                   (rows[i].get(args.sort) or 0) * (1 if d == "min" else -1)))
    order = order[: args.top] if args.top else order
    rows, front = [rows[i] for i in order], [front[i] for i in order]
    if args.format == "html":
        out = write_report(rows, front, args.out or Path(args.path or LB.default_path()).with_suffix(".html"))
        print(f"wrote {out} ({len(rows)} models)")
        return 0
    if args.format == "json":
        text = json.dumps([{**r, "pareto": f} for r, f in zip(rows, front)], default=str)
    elif args.format == "md":
        cols = ("pareto",) + COLUMNS
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r, f in zip(rows, front):
            lines.append("| " + " | ".join(["★" if f else ""] + [_cell(r.get(c)) for c in COLUMNS]) + " |")
        text = "\n".join(lines)
    else:

        t = Table(title=f"leaderboard ({len(rows)} models, ★ Pareto: LPIPS↓ PSNR↑ latency↓)")
        for c in ("★",) + COLUMNS:
            t.add_column(c)
        for r, f in zip(rows, front):
            t.add_row("★" if f else "", *[_cell(r.get(c)) for c in COLUMNS])
        if args.out:
            Console(file=open(args.out, "w"), width=200).print(t)
            return 0
        Console(width=220).print(t)
        return 0
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


def _cell(v) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_add(args: argparse.Namespace) -> int:


    name = args.name or f"baseline/{Path(args.weights).stem}"
    out = Path(args.export_dir or Path("results/exports") / name.replace("/", "_"))
    data = (args.data, args.data_format) if args.data else None
    settings = ExportSettings(formats=tuple(parse_formats(args.formats)), deploy_size=parse_size(args.deploy_size),
                              gate_size=parse_size(args.gate_size) if args.gate_size else None, runs=args.runs,
                              targets=tuple(args.target or ()), benchmark_binary=args.benchmark_binary or "",
                              mai_c=args.mai_c)
    res = publish(load_generator(args.weights, arch=args.arch), out, settings,
                  Provenance(kind="baseline", model_id=name), data=data, weights_mode=args.backbone_weights,
                  leaderboard_path=getattr(args, "path", None))
    if res.duplicate_of:
        print(f"{name} not added: the same weights at {args.deploy_size} are on the leaderboard as {res.duplicate_of}")
        return 0
    if res.row is None:
        print(f"isp-search: {name} not added: export refused: {res.export.reason}", file=sys.stderr)
        return 1
    r = res.row
    lat = f"{r['latency_ms']:.2f} ms {r['latency_statistic']} on {r['latency_target']}" if r["latency_ms"] is not None \
        else "no latency"
    psnr = f"{r['psnr']:.2f} dB" if r["psnr"] is not None else "–"
    lpips = f"{r['lpips']:.4f} ({r['lpips_weights']})" if r["lpips"] is not None else "–"
    where = f" on {r['data_format']} {r['eval_split']} ({r['n_test_images']} images)" if r["data_format"] else ""
    print(f"added {name}: PSNR {psnr}, LPIPS {lpips}{where}; latency {lat}; "
          f"parity >= {r['parity_min_psnr_db']:.1f} dB, <= {r['parity_max_lsb']:.2f} LSB")
    return 0
