"""Validation/test evaluation of the generator, the joint selection score and the sample grids."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from isp_search.metrics import Evaluator

EVAL_METRICS = ("psnr", "ssim", "lpips")


def joint_score(metrics: dict[str, float], lpips_weight: float) -> float:
    """The objective that picks best.pt: ``psnr - w·lpips`` (higher is better; 0.01 LPIPS ~ w/100 dB)."""
    psnr, lp = metrics.get("psnr", math.nan), metrics.get("lpips", 0.0)
    return float(psnr - lpips_weight * lp)


@torch.no_grad()
def evaluate(gen: torch.nn.Module, ds: Dataset, evaluator: Evaluator, device: torch.device, batch_size: int,
             limit: int | None = None, lpips_weight: float = 10.0) -> dict[str, float]:
    """Mean metrics of the clamped output against the scene's own RGB (``paired_target``), plus ``ref_mse`` (MSE
    to the demosaiced reference) and ``score``. A split without paired RGB reports only ``ref_mse``."""
    n = len(ds) if limit is None else min(limit, len(ds))
    loader = DataLoader(Subset(ds, range(n)), batch_size=max(1, min(batch_size, n)), shuffle=False)
    evaluator.reset()
    was_training = gen.training
    gen.eval()
    ref_se, ref_n = 0.0, 0
    for batch in loader:
        y = gen(batch["input"].to(device)).float().clamp(0, 1)
        if "reference" in batch:
            ref = batch["reference"].to(device)
            ref_se += float(((y - ref) ** 2).flatten(1).mean(1).sum())
            ref_n += y.shape[0]
        if "paired_target" in batch:
            evaluator.update(y, batch["paired_target"])
    gen.train(was_training)
    out: dict[str, float] = {}
    if evaluator.count:
        res = evaluator.result()
        out.update({k: float(res[k]) for k in EVAL_METRICS if k in res})
        out["score"] = joint_score(out, lpips_weight)
    if ref_n:
        out["ref_mse"] = ref_se / ref_n
    return out


@torch.no_grad()
def save_sample_grid(gen: torch.nn.Module, ds: Dataset, device: torch.device, path: Path, n: int = 4) -> Path:
    """PNG with one row per image: demosaiced RAW (the reference) | output | target RGB."""

    rows = []
    was_training = gen.training
    gen.eval()
    for i in range(min(n, len(ds))):
        item = ds[i]
        y = gen(item["input"][None].to(device)).float().clamp(0, 1)[0].cpu()
        target = item.get("paired_target", item.get("target", torch.zeros_like(y)))
        ref = item.get("reference", torch.zeros_like(y))
        rows.append(torch.cat([ref, y, target], dim=2))
    gen.train(was_training)
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path
