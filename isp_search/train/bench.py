"""``bench_train(cfg, steps)``: where a training step's time and FLOPs go, against the unavoidable floor.

Floor = for each frozen branch, its forward on the real and on the fake images plus one backward through the fake
branch (the generator and discriminators are left out of the floor). FLOPs come from
``torch.utils.flop_counter.FlopCounterMode``; backward passes through each frozen branch are counted with hooks.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from isp_search.train.config import TrainConfig
from isp_search.train.losses import LOSSES
from isp_search.train.step import (
    BRANCH_NET, Branches, FrozenNets, build_discriminators, discriminator_step, generator_step,
)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def floor_flops(nets: FrozenNets, batch: dict[str, torch.Tensor], y: torch.Tensor, branches: set[str],
                content_lab: bool) -> dict[str, int]:
    """Per branch: forward on real + forward on fake + one backward through the fake branch."""
    out = {}
    for b in sorted(branches):
        def work(b=b):
            leaf = y.detach().requires_grad_(True)
            br = Branches(nets, leaf, batch, content_lab)
            if b in ("lpips", "dists"):  # pyiqa's module runs both images itself
                net = getattr(nets, BRANCH_NET[b])
                res = net(leaf, batch["target"], normalize=True) if b == "lpips" else net(leaf, batch["target"])
                torch.autograd.grad(res.sum(), leaf)
                return
            br.real(b)
            feats = br.fake(b)
            feats = feats if isinstance(feats, tuple) else (feats,)
            torch.autograd.grad(sum(f.sum() for f in feats), leaf)
        out[b] = _flops(work)
    return out


def bench_train(cfg: TrainConfig, steps: int = 5) -> dict[str, Any]:
    """Time ``steps`` training steps (after one warm-up) and count FLOPs of one step with every D group stepping."""
    from isp_search.train.loop import make_datasets, pick_device

    device = pick_device(cfg.train.device)
    data = make_datasets(cfg)
    ds = data["train"]
    gen = ds.spec.build().to(device)
    terms = cfg.active_terms
    mult = {t: cfg.multiplier(t) for t in terms}
    lab = cfg.mode in ("pretrain", "unpaired")
    nets = FrozenNets(terms, cfg.backbone_weights, cfg.features.vit_img_size, cfg.features.input).to(device)
    discs = build_discriminators(terms, nets, tuple(ds[0]["reference"].shape[-2:]), lab, device)
    o = cfg.optim
    g_opt = torch.optim.Adam(gen.parameters(), lr=o.g_lr, betas=(o.g_beta1, o.g_beta2))
    groups = {}
    for g, lr, every in (("color", o.d_color_lr, o.d_color_every), ("texture", o.d_texture_lr, o.d_texture_every)):
        ts = [t for t in discs if LOSSES.get(t).group == g]
        if ts:
            groups[g] = (ts, torch.optim.Adam([p for t in ts for p in discs[t].parameters()], lr=lr), every)
    loader = torch.utils.data.DataLoader(ds, batch_size=min(cfg.train.batch_size, len(ds)), shuffle=True,
                                         drop_last=True, num_workers=cfg.data.workers)

    def batches():
        while True:
            yield from loader

    it = batches()
    timer: dict[str, float] = {}
    counter: Counter = Counter()
    total = 0.0
    for i in range(steps + 1):  # step 0 is a warm-up
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in next(it).items()}
        t1 = time.perf_counter()
        step_timer: dict[str, float] = {"data_wait": t1 - t0}
        step_counter: Counter = Counter()
        _, br = generator_step(gen, g_opt, batch, nets, discs, mult, lab, cfg.losses.dla, cfg.losses.dla_eps,
                               counter=step_counter, timer=step_timer)
        t2 = time.perf_counter()
        for g, (ts, opt, every) in groups.items():
            if (i + 1) % every == 0:
                discriminator_step(ts, br, discs, opt, cfg.losses.r_gamma, o.d_clip)
        step_timer["d_steps"] = time.perf_counter() - t2
        if i > 0:
            total += time.perf_counter() - t0
            for k, v in step_timer.items():
                timer[k] = timer.get(k, 0.0) + v
            counter.update(step_counter)

    batch = {k: v.to(device) for k, v in next(it).items()}
    holder: dict[str, Any] = {}

    def g_step():
        holder["br"] = generator_step(gen, g_opt, batch, nets, discs, mult, lab, cfg.losses.dla, cfg.losses.dla_eps)[1]

    g_flops = _flops(g_step)
    d_flops = {g: _flops(lambda ts=ts, opt=opt: discriminator_step(ts, holder["br"], discs, opt, cfg.losses.r_gamma,
                                                                    o.d_clip)) for g, (ts, opt, _) in groups.items()}
    per_step = g_flops + sum(d_flops[g] / groups[g][2] for g in groups)
    with torch.no_grad():
        y = gen(batch["input"]).float()
    branches = {LOSSES.get(t).branch for t in terms if LOSSES.get(t).branch}
    floor = floor_flops(nets, batch, y, branches, lab)
    floor_total = sum(floor.values())
    passes = {b: counter[b] / steps for b in sorted(branches)}
    return {
        "config_mode": cfg.mode, "arch": cfg.model.arch, "device": str(device), "steps": steps,
        "batch_size": int(batch["input"].shape[0]), "step_ms": 1000 * total / steps,
        "time_ms": {k: 1000 * v / steps for k, v in timer.items()},
        "flops_per_step": per_step, "flops_generator_step": g_flops, "flops_d_step": d_flops,
        "floor_flops_per_step": floor_total, "floor_flops_by_branch": floor,
        "flops_ratio_to_floor": per_step / floor_total if floor_total else None,
        "frozen_backward_passes_by_branch": passes,
        "frozen_backward_passes_per_branch": max(passes.values()) if passes else 0,
    }
