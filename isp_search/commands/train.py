"""``isp-search train CONFIG.yaml [--set a.b=value ...] [--run-dir DIR] [--resume DIR]``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from isp_search.train import load_train_config, train
from isp_search.train.state import resolve_resume


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a generator (pretrain, paired_noadv, paired or unpaired) from a YAML config",
        description="Train with the paper's losses, discriminators and Dynamic Loss Adaptation. Writes a run folder: "
        "config.yaml, run.json (seed, git SHA), metrics.jsonl, tb/ (TensorBoard), samples/*.png, "
        "checkpoints/{last,best}.pt and summary.json. Exit 0 when completed, 1 when the run diverged.")
    p.add_argument("config", metavar="CONFIG", help="training YAML (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.g_lr=1e-4 (repeatable)")
    p.add_argument("--run-dir", default=None,
                   help="run folder (default: runs/<config name>-<YYYYmmdd-HHMMSS>)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue exactly from a run folder (or its checkpoints/ folder or last.pt)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config, args.overrides)
    run_dir = args.run_dir or args.resume
    if run_dir is None:
        name = cfg.name or Path(args.config).stem
        run_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume:
        resolve_resume(args.resume)  # a bad path fails before any work
    summary = train(cfg, run_dir, resume=args.resume)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        test = summary.get("test") or {}
        nums = ", ".join(f"{k} {v:.4g}" for k, v in test.items() if isinstance(v, float))
        print(f"{summary['status']}: {summary['step']}/{summary['steps']} steps in {summary['run_dir']}"
              + (f" ({summary['reason']})" if summary.get("reason") else "")
              + (f"; test: {nums}" if nums else ""))
    return 0 if summary["status"] == "completed" else 1
