"""``isp-search demo``: the smoke search end to end on this machine (synthetic data, local Ray, CPU)."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from isp_search.data.datasets import make_datasets
from isp_search.errors import UserError
from isp_search.metrics import Evaluator
from isp_search.models.checkpoint import load_generator
from isp_search.search.context import base_train_config
from isp_search.search.pretrain import config_key, run_once
from isp_search.search.space import metric_direction
from isp_search.search.space_file import absolute_path, load_space
from isp_search.search.study import run_study
from isp_search.train.config import apply_overrides, load_train_config
from isp_search.train.evaluate import EVAL_METRICS, evaluate

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SPACE = ROOT / "search_spaces" / "smoke.yaml"
PRETRAIN_CONFIG = ROOT / "configs" / "synth_pretrain.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run search_spaces/smoke.yaml end to end on CPU: search, export, leaderboard + HTML report",
        description="Build the synthetic data set if missing, start a local Ray in this process, run a few tiny "
        "trials of the smoke search space, export the Pareto-optimal ones and write the leaderboard "
        "(results/leaderboard.parquet) and its HTML report (results/leaderboard.html). As in the paper, the "
        "unpaired trials start from a pretrained (demosaicing) generator: a short configs/synth_pretrain.yaml run "
        "into RESULTS/demo-pretrain-<config hash>, reused when it is there. A few minutes on 2 cores.")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--space", default=str(SMOKE_SPACE), help="search space (default: search_spaces/smoke.yaml)")
    p.add_argument("--pretrain-steps", type=int, default=300,
                   help="steps of the pretrain run the trials start from (default: 300; 0: trials start from scratch)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    results = absolute_path(args.results)
    space = replace(space, storage=replace(space.storage, path=str(Path(results) / "search")),
                    export=replace(space.export, results=results))
    if args.pretrain_steps < 0:
        raise UserError(f"--pretrain-steps must be >= 0, got {args.pretrain_steps}")
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.pretrain_steps:
        return 0 if run_study(space, name=name).pareto else 1
    init = pretrain(Path(results), args.pretrain_steps)
    space = replace(space, base=replace(space.base, overrides={**space.base.overrides, "model.init_from": init}))
    start = start_metrics(space)  # before the search: a failure here costs seconds, not the whole demo
    summary = run_study(space, name=name)
    print(compare_with_start(start, summary, space, init))
    return 0 if summary.pareto else 1


def start_metrics(space) -> dict[str, float]:
    """Validation metrics of the generator the trials start from (``model.init_from``), measured as a trial
    measures itself: the trials' base config, val subset (``data.eval_limit``), crop size and metric networks."""
    cfg = base_train_config(space)
    val = make_datasets(cfg).get("val")
    if val is None:
        return {}
    gen = val.spec.build()
    gen.load_state_dict(load_generator(cfg.model.init_from, arch=cfg.model.arch).model.state_dict())
    device = torch.device("cpu")
    evaluator = Evaluator(EVAL_METRICS, cfg.backbone_weights, device)
    out = evaluate(gen, val, evaluator, device, cfg.train.batch_size, cfg.data.eval_limit, cfg.train.score_lpips_weight)
    return {**out, "n_images": min(len(val), cfg.data.eval_limit or len(val)), "weights": cfg.backbone_weights}


def compare_with_start(start: dict[str, float], summary, space, init: str) -> str:
    """The start's metrics beside the best trial's on each objective, and one line saying which were beaten."""
    names = [o.metric for o in space.objectives]
    shown = ", ".join(f"{k} {start[k]:.4g}" for k in dict.fromkeys([*names, "psnr", "ssim", "lpips"]) if k in start)
    where = f"the trials' val split, {start.get('n_images', '?')} images, {start.get('weights', '?')} metric backbones"
    lines = [f"pretrain start {init}: val {shown} ({where})"]
    verdicts, best_parts = [], []
    for o in space.objectives:
        sign = 1.0 if metric_direction(o.metric) == "max" else -1.0
        entries = [e for e in summary.pareto if e.values.get(o.metric) is not None]
        if not entries or o.metric not in start:
            verdicts.append(f"{o.metric.upper()}: not measured")
            continue
        best = max(entries, key=lambda e: sign * e.values[o.metric])
        b, s0 = best.values[o.metric], start[o.metric]
        best_parts.append(f"{o.metric} {b:.4g} (#{best.number})")
        if math.isclose(b, s0, rel_tol=1e-5, abs_tol=1e-7):  # the start itself, evaluated again
            verdicts.append(f"{o.metric.upper()} no (the best is the start itself, {b:.4g})")
            continue
        beat = sign * (b - s0) > 0
        verdicts.append(f"{o.metric.upper()} {'yes' if beat else 'no'} ({b:.4g} vs {s0:.4g})")
    lines.append("best trial per objective: " + (", ".join(best_parts) or "none (no COMPLETE trial)"))
    lines.append("did the best trial beat the pretrain start? " + "; ".join(verdicts))
    return "\n".join(lines)


def pretrain(results: Path, steps: int, overrides: dict | None = None) -> str:
    """A finished ``steps``-step synth_pretrain run under ``results``, in a folder named by its resolved config
    (``demo-pretrain-<hash>``): reused when it completed, resumed when it was cut off, trained otherwise."""
    over = {"train.steps": steps, "train.eval_interval": steps, "train.log_interval": max(1, steps // 5)}
    cfg = apply_overrides(load_train_config(PRETRAIN_CONFIG), {**over, **(overrides or {})})
    run_dir = results / f"demo-pretrain-{config_key(cfg)}"  # the search's pretrain stage keys its runs alike
    done = run_once(cfg, run_dir)
    if done.get("reused"):
        print(f"pretrained generator: {run_dir} (reused)")
        return str(run_dir)
    print(f"pretrained generator: {run_dir} ({steps} steps, val psnr {done['val'].get('psnr', float('nan')):.2f} dB)")
    return str(run_dir)
