"""``train(cfg, run_dir)``: the whole training algorithm, top to bottom (CleanRL style).

Run folder: ``config.yaml`` (resolved), ``run.json`` (seed, git SHA, device), ``metrics.jsonl``, ``tb/``
(TensorBoard), ``samples/step_XXXXXX.png`` (demosaiced RAW | output | target), ``checkpoints/last.pt`` and
``checkpoints/best.pt`` (best validation ``train.select_by``: the joint ``score`` or PSNR), ``summary.json``
(status and test metrics of best.pt).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from isp_search.configio import ConfigError, to_dict
from isp_search.data.datasets import make_datasets
from isp_search.errors import UserError
from isp_search.metrics import Evaluator
from isp_search.models.checkpoint import load_generator
from isp_search.progress import Progress
from isp_search.provenance import code_identity
from isp_search.train import state as st
from isp_search.train.config import GAN_MODES, TrainConfig
from isp_search.train.evaluate import evaluate, save_sample_grid
from isp_search.train.losses import LOSSES
from isp_search.train.real_cache import open_real_cache
from isp_search.train.step import (
    FrozenNets,
    GeneratorStepOptions,
    build_discriminators,
    discriminator_step,
    generator_step,
)

Report = Callable[[int, dict[str, Any], str], None]
# The batch keys a training step reads: only these travel to the device (raw, paired_target, index stay behind).
STEP_KEYS = frozenset({"input", "reference", "target"})
# The validation numbers a progress line carries (the latest evaluation's), and how: short enough that a trial's
# line keeps within 120 columns behind Ray's "(run_trial pid=...)" prefix.
PROGRESS_METRICS = {"psnr": "{:.2f}", "ssim": "{:.3f}", "lpips": "{:.3f}"}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda asked for, but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def train(cfg: TrainConfig, run_dir: str | Path, report: Report | None = None,
          resume: str | Path | None = None, progress_label: str | None = None) -> dict[str, Any]:
    """Train the generator of ``cfg`` into ``run_dir``; returns (and writes) the summary dict.

    ``report(step, metrics, checkpoint_dir)`` is called after every evaluation, once the checkpoint is written.
    ``resume``: a run folder, its ``checkpoints/`` folder or a ``last.pt`` to continue exactly from.
    ``progress_label`` (a search's ``trial 1bd6f84a``, ``pretrain``): progress under that name even where
    ``train.progress`` is off (a bar on a terminal, else a line every 30 s and one per evaluation).
    """
    t_start = time.time()
    if cfg.mode in GAN_MODES and not cfg.model.init_from and resume is None and not cfg.model.allow_scratch:
        raise ConfigError(f"model.init_from: a {cfg.mode} (GAN) stage starts from a pretrained generator; set "
                          "model.init_from to the pretrain run, or model.allow_scratch: true to start from random")
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.train.device)
    cuda = device.type == "cuda"
    st.seed_everything(cfg.train.seed)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    st.write_json(run_dir / "run.json", {"seed": cfg.train.seed, **code_identity(), "device": str(device),
                                         "torch": torch.__version__, "backbone_weights": cfg.backbone_weights,
                                         "init_from": cfg.model.init_from if resume is None else None,
                                         "init_sha256": st.checkpoint_sha256(cfg.model.init_from) if resume is None
                                         else None})

    # ---- data, generator, frozen networks, discriminators, optimisers ----------------------------------------
    data = make_datasets(cfg)
    train_ds = data["train"]
    spec = train_ds.spec
    preset = cfg.model.preset or spec.preset
    gen = spec.build().to(device)
    if cfg.model.init_from and resume is None:
        gen.load_state_dict(load_generator(cfg.model.init_from, arch=cfg.model.arch).model.state_dict())
    multipliers = {t: cfg.multiplier(t) for t in cfg.active_terms}
    content_lab = cfg.content_lab
    nets = FrozenNets(cfg.active_terms, cfg.backbone_weights, cfg.features.vit_img_size, cfg.features.input).to(device)
    out_hw = tuple(train_ds[0]["reference"].shape[-2:])
    discs = build_discriminators(cfg.active_terms, nets, out_hw, content_lab, device)

    real_cache = open_real_cache(cfg, train_ds, nets, device, "bfloat16" if cuda and cfg.train.amp else "float32")
    if cuda and cfg.train.channels_last:
        gen, nets = gen.to(memory_format=torch.channels_last), nets.to(memory_format=torch.channels_last)
    o = cfg.optim
    g_opt = torch.optim.Adam(gen.parameters(), lr=o.g_lr, betas=(o.g_beta1, o.g_beta2))
    groups = {}
    for g, lr, b1, b2, every in (("color", o.d_color_lr, o.d_color_beta1, o.d_color_beta2, o.d_color_every),
                                 ("texture", o.d_texture_lr, o.d_texture_beta1, o.d_texture_beta2, o.d_texture_every)):
        terms = [t for t in discs if LOSSES.get(t).group == g]
        if terms:  # every layer of every discriminator exists before its optimiser (no lazy layers)
            params = [p for t in terms for p in discs[t].parameters()]
            groups[g] = (terms, torch.optim.Adam(params, lr=lr, betas=(b1, b2)), every)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (cuda and cfg.train.amp) else (
        contextlib.nullcontext)
    step_opts = GeneratorStepOptions(content_lab, cfg.losses.dla, cfg.losses.dla_eps, cfg.content_vs_reference,
                                     autocast(), real_cache=real_cache)

    # ---- resume ------------------------------------------------------------------------------------------------
    order = st.BatchOrder(len(train_ds), cfg.train.batch_size, cfg.train.seed)
    step, best = 0, {"score": -math.inf, "step": -1, "metrics": {}}
    if resume is not None:
        ck = st.load_training_checkpoint(resume)
        src_best = st.resolve_resume(resume).with_name("best.pt")
        if src_best.is_file() and not (ckpt_dir / "best.pt").exists():  # resuming into a fresh folder
            st.copy_atomic(src_best, ckpt_dir / "best.pt")
        os_ = ck["optim_state"]
        gen.load_state_dict(ck["state_dict"])
        g_opt.load_state_dict(os_["g"])
        for g, (terms, opt, _) in groups.items():
            opt.load_state_dict(os_["d"][g])
        for t, sd in os_["discriminators"].items():
            discs[t].load_state_dict(sd)
        step, best = int(ck["step"]), os_["best"]
        order.load(os_["data"])
        st.set_rng_state(os_["rng"])
    train_ds.set_epoch(order.epoch)
    start_step = step

    evaluator = Evaluator(("psnr", "ssim", "lpips"), cfg.backbone_weights, device)
    # TensorBoard's own stub of the TensorFlow API, not TensorFlow: the ``tensorboard.compat.notf`` marker (its
    # no_tensorflow build option) makes tensorboard.compat pick the stub, which writes the same event files. With
    # TensorFlow installed it was imported instead: 7 s of every run's start on a 2-core machine (2026-12-07).
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    # deferred: tensorboard imports TensorFlow when it is installed (seconds, and triton crashes after it)
    from torch.utils.tensorboard import SummaryWriter

    # A resumed run writes again every step after its checkpoint's: TensorBoard drops the older events from
    # purge_step on. The checkpoint's own step is not repeated, so it is kept (purge_step=step lost its train and
    # val scalars). A new run purges nothing.
    tb = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1 if resume is not None else None)
    st.truncate_log(run_dir / "metrics.jsonl", step if resume is not None else -1)  # each step's rows once
    log = (run_dir / "metrics.jsonl").open("a")

    # where the run's wall clock goes, as ``kind: time`` rows (seconds since the previous such row, one after each
    # evaluation and one after the test split): setup, training steps, data wait, evaluation, checkpoints, report
    clock = {"setup_s": time.time() - t_start, "train_s": 0.0, "data_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0,
             "report_s": 0.0, "test_s": 0.0}

    def emit_time(at: int) -> None:
        log.write(json.dumps({"kind": "time", "step": at, **{k: round(v, 4) for k, v in clock.items()}}) + "\n")
        log.flush()
        clock.update(dict.fromkeys(clock, 0.0))

    def emit(kind: str, at: int, metrics: dict[str, Any]) -> None:
        log.write(json.dumps({"kind": kind, "step": at, **metrics}) + "\n")
        log.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                tb.add_scalar(k if kind == "train" else f"{kind}/{k}", v, at)

    def loader():
        return DataLoader(train_ds, batch_sampler=order.remaining(), num_workers=cfg.data.workers, pin_memory=cuda)

    def save(name: str) -> None:
        opt_state = {"g": g_opt.state_dict(), "d": {g: v[1].state_dict() for g, v in groups.items()},
                     "discriminators": {t: d.state_dict() for t, d in discs.items()}, "data": order.state(),
                     "rng": st.rng_state(), "best": best}
        st.save_training_checkpoint(ckpt_dir / name, gen, cfg.model.arch, preset, step, opt_state, mode=cfg.mode,
                                    backbone_weights=cfg.backbone_weights, config=to_dict(cfg))

    def evaluate_candidate(best: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the generator as it is now; it becomes best.pt only if it beats every earlier evaluation."""
        t0 = time.perf_counter()
        val = evaluate(gen, data["val"], evaluator, device, cfg.train.batch_size, cfg.data.eval_limit,
                       cfg.train.score_lpips_weight) if "val" in data else {}
        save_sample_grid(gen, data.get("val", train_ds), device, run_dir / "samples" / f"step_{step:06d}.png")
        chosen = val.get(cfg.train.select_by, -math.inf)  # best["score"] holds the select_by value
        improved = chosen > best["score"] or best["step"] < 0
        if improved:
            best = {"score": chosen, "step": step, "metrics": val}
        t1 = time.perf_counter()
        save("last.pt")
        if improved:
            # generator only: export reads it, resume never does (last.pt holds the training state once)
            st.save_best_generator(ckpt_dir / "best.pt", gen, cfg.model.arch, preset, step, mode=cfg.mode,
                                   backbone_weights=cfg.backbone_weights, config=to_dict(cfg))
        emit("val", step, val)
        tb.flush()  # an evaluation is never lost to a stopped trial (the writer flushes only every 120 s)
        t2 = time.perf_counter()
        clock["eval_s"] += t1 - t0
        clock["checkpoint_s"] += t2 - t1
        emit_time(step)  # before the report: a trial stopped there has its time row
        bar.set_postfix(**{k: fmt.format(val[k]) for k, fmt in PROGRESS_METRICS.items() if k in val})
        bar.print_line()
        if report is not None:
            report(step, {**val, "step": step, "best_score": best["score"]}, str(ckpt_dir))
        clock["report_s"] += time.perf_counter() - t2
        return best

    bar = Progress(cfg.train.steps, progress_label or "train", unit="step", initial=step,
                   enabled=cfg.train.progress or progress_label is not None)
    try:
        # ---- the start is a candidate: a run that never beats its init_from says so (best_step 0) -------------------
        if step == 0 and resume is None and cfg.evaluates_start:
            best = evaluate_candidate(best)

        # ---- the loop ----------------------------------------------------------------------------------------------

        status, reason = "completed", None
        batches = iter(loader())
        timings = {"data_s": 0.0, "step_s": 0.0}
        while step < cfg.train.steps:
            t0 = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:  # epoch done: re-draw pairing for the next epoch, new seeded order
                order.epoch, order.pos = order.epoch + 1, 0
                train_ds.set_epoch(order.epoch)
                batches = iter(loader())
                batch = next(batches)
            order.pos += 1
            # ids (index, target_index) stay on the CPU: they key the real-feature cache
            batch = {k: v.to(device, non_blocking=True) if k in STEP_KEYS else v for k, v in batch.items()}
            t1 = time.perf_counter()
            d_terms = [t for ts, _, every in groups.values() if (step + 1) % every == 0 for t in ts]
            metrics, br = generator_step(gen, g_opt, batch, nets, discs, multipliers, replace(step_opts, d_terms=d_terms))
            if "nonfinite" in metrics:
                status, reason = "diverged", f"non-finite {metrics['nonfinite']} at step {step + 1}"
                emit("train", step + 1, {k: v for k, v in metrics.items() if k != "nonfinite"} | {"diverged": 1})
                break
            for g, (terms, opt, every) in groups.items():
                if (step + 1) % every == 0:
                    metrics.update(discriminator_step(terms, br, discs, opt, cfg.losses.r_gamma, o.d_clip))
            if "nonfinite" in metrics:
                status, reason = "diverged", f"non-finite {metrics['nonfinite']} at step {step + 1}"
                break
            step += 1
            timings["data_s"] += t1 - t0
            timings["step_s"] += time.perf_counter() - t1
            clock["data_s"] += t1 - t0
            clock["train_s"] += time.perf_counter() - t1
            bar.update(1)
            if step % cfg.train.log_interval == 0 or step == cfg.train.steps:
                emit("train", step, metrics)
                bar.set_postfix(**{**bar.postfix, "loss": f"{metrics['loss/total']:.3g}"})
            if step % cfg.train.eval_interval == 0 or step == cfg.train.steps:
                best = evaluate_candidate(best)
        bar.close()

        # ---- test split with the best checkpoint -----------------------------------------------------------------
        test: dict[str, float] = {}
        t0 = time.perf_counter()
        if (ckpt_dir / "best.pt").is_file() and "test" in data:
            best_gen = spec.build().to(device)
            best_gen.load_state_dict(torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=False)["state_dict"])
            test = evaluate(best_gen, data["test"], evaluator, device, cfg.train.batch_size, cfg.data.eval_limit,
                            cfg.train.score_lpips_weight)
            emit("test", step, test)
        clock["test_s"] += time.perf_counter() - t0
        emit_time(step)
        elapsed = time.time() - t_start
        summary = {
            "status": status, "reason": reason, "step": step, "steps": cfg.train.steps, "mode": cfg.mode,
            "arch": cfg.model.arch, "preset": preset, "backbone_weights": cfg.backbone_weights,
            "best_step": best["step"], "best_score": best["score"] if math.isfinite(best["score"]) else None,
            "select_by": cfg.train.select_by,
            "val": best["metrics"], "test": test, "run_dir": str(run_dir),
            "checkpoint": str(ckpt_dir / "best.pt") if (ckpt_dir / "best.pt").is_file() else None,
            "elapsed_s": elapsed, "steps_per_s": (step - start_step) / max(timings["step_s"] + timings["data_s"], 1e-9),
            "data_wait_s": timings["data_s"], **code_identity(), "seed": cfg.train.seed,
        }
        st.write_json(run_dir / "summary.json", summary)
    finally:  # a stopped, pruned or failed run keeps what it logged (TensorBoard's last events too)
        log.close()
        tb.close()
    return summary
