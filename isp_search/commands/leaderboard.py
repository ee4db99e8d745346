"""``isp-search leaderboard``: show the table of exported models (Pareto front marked), or add a baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from isp_search.errors import UserError


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
    add = sub.add_parser("add", help="evaluate, export, benchmark and add an external checkpoint as a baseline row",
                         description="For a checkpoint not trained by a search (e.g. the paper's published weights).")
    add.add_argument("--arch", default=None, help="backbone name (needed for a paper-format state_dict)")
    add.add_argument("--weights", required=True, help="checkpoint file, run folder or paper state_dict")
    add.add_argument("--data", default=None, help="data set root for the test-split metrics and sample crops")
    add.add_argument("--data-format", "--format", dest="data_format", default="mai2022",
                     help="format of --data (default: mai2022)")
    add.add_argument("--size", default="256x256", help="export size HxW for the gates (default: 256x256)")
    add.add_argument("--bench-size", default="1088x1920", help="latency/MACs size HxW (default: 1088x1920)")
    add.add_argument("--name", default=None, help="model id in the table (default: baseline/<file name>)")
    add.add_argument("--out", default=None, help="artifact folder (default: results/exports/<name>)")
    add.add_argument("--path", default=None, help="leaderboard Parquet file")
    add.add_argument("--mai-c", type=float, default=1.0, help="C in the MAI score 2^(2 PSNR)/(C runtime)")
    add.add_argument("--backbone-weights", choices=("pretrained", "random"), default="pretrained",
                     help="LPIPS/DISTS feature networks: pretrained (local files, see `isp-search weights`) or "
                     "random (offline; the row is labelled so) (default: pretrained)")
    add.add_argument("--target", default=None,
                     help="also time on a phone: adb or adb:SERIAL (needs --benchmark-binary; default: CPU only)")
    add.add_argument("--benchmark-binary", default=None, help="TFLite benchmark_model binary for the phone")
    add.set_defaults(func=run_add)


def _rows(path) -> list[dict]:
    from isp_search.export import leaderboard as LB

    return LB.read(path).to_pylist()


def _direction(col: str) -> str:
    try:
        from isp_search.metrics import direction

        return direction(col)
    except Exception:  # columns that are not metrics
        return "min" if col in ("lpips", "dists", "latency_ms", "params", "macs") else "max"


def run_show(args: argparse.Namespace) -> int:
    from isp_search.export import leaderboard as LB
    from isp_search.export.report import COLUMNS, DEFAULT_OBJECTIVES, write_report

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
        from rich.console import Console
        from rich.table import Table

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


def _adb_args(args: argparse.Namespace) -> dict | None:
    if not args.target:
        return None
    if not args.target.startswith("adb"):
        raise UserError(f"--target {args.target!r}: valid: adb, adb:SERIAL (the CPU is always timed)")
    if not args.benchmark_binary:
        raise UserError("--target adb needs --benchmark-binary PATH (TFLite benchmark_model for the phone)")
    import shutil

    if shutil.which("adb") is None:  # fail before the minutes of export and evaluation, not after
        raise UserError("--target adb: no 'adb' on PATH; install Android platform-tools and connect a phone")
    serial = args.target.split(":", 1)[1] if ":" in args.target else None
    return {"benchmark_binary": args.benchmark_binary, "serial": serial}


def run_add(args: argparse.Namespace) -> int:
    from isp_search.export.pipeline import parse_size
    from isp_search.export.publish import publish

    name = args.name or f"baseline/{Path(args.weights).stem}"
    out = Path(args.out or Path("results/exports") / name.replace("/", "_"))
    data = (args.data, args.data_format) if args.data else None
    res = publish(args.weights, out, arch=args.arch, export_size=parse_size(args.size),
                  bench_size=parse_size(args.bench_size), data=data, kind="baseline", model_id=name,
                  mai_c=args.mai_c, leaderboard_path=args.path, run_dir=None, adb=_adb_args(args),
                  weights_mode=args.backbone_weights)
    if res.row is None:
        print(f"isp-search: {name} not added: export refused: {res.export.reason}")
        return 1
    r = res.row
    print(f"added {name}: PSNR {r['psnr']}, LPIPS {r['lpips']} ({r['lpips_weights']}), "
          f"latency {r['latency_ms']:.2f} ms ({r['latency_target']})")
    return 0
