"""``bench_train(cfg, steps)``: where a training step's time and FLOPs go, against the floor and the textbook DLA.

Every timed step runs the generator step and every discriminator group; ``step_ms`` (and ``flops_per_step``)
count each D group at its real ratio (its time / its ``d_*_every``), so the D steps are inside the number at the
paper's settings however few steps are timed. Floor = for each frozen branch, its forward on the real and on the
fake images plus one backward through the fake branch. FLOPs come from ``torch.utils.flop_counter`` with CPU
attention (SDPA) counted too; backward passes through each frozen branch are counted with hooks.

``against_naive``: the textbook DLA timed beside ours in the same run, on the same batches — the trainer's own step
with ``textbook_dla``: for every term a backward through its frozen network to the generator parameters (for its
norm), then one backward of the weighted total (and D steps that recompute D(real)); ``naive_ratio`` = its ms per
step / ours. ``compare_cache``: ours also
with ``features.cache_real`` (a temporary cache, filled before timing). ``bench_sizes``: all three at each of
several square sizes, one row per size.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from isp_search.configio import to_dict
from isp_search.data.datasets import make_datasets
from isp_search.data.synth import SYNTH_FORMATS, synthesize
from isp_search.errors import UserError
from isp_search.train.config import TrainConfig, train_config_from_dict
from isp_search.train.loop import STEP_KEYS, pick_device
from isp_search.train.losses import LOSSES
from isp_search.train.real_cache import CACHED_BRANCHES, RealCache, open_real_cache, varying_real_images
from isp_search.train.step import (
    BRANCH_NET,
    Branches,
    FrozenNets,
    GeneratorStepOptions,
    StepProbes,
    build_discriminators,
    discriminator_step,
    generator_step,
)

_aten = torch.ops.aten


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels but not the CPU one the ViT runs here
ATTENTION_FLOPS = {_aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
                   _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward}


def count_flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as fc:
        fn()
    return int(fc.get_total_flops())


def floor_flops(nets: FrozenNets, batch: dict[str, torch.Tensor], y: torch.Tensor, branches: set[str],
                content_lab: bool, content_ref: bool | None = None) -> dict[str, int]:
    """Per branch: forward on real + forward on fake + one backward through the fake branch."""
    out = {}
    for b in sorted(branches):
        def work(b=b):
            leaf = y.detach().requires_grad_(True)
            br = Branches(nets, leaf, batch, content_lab, content_ref=content_ref)
            if b in ("lpips", "dists"):  # pyiqa's module runs both images itself
                net = getattr(nets, BRANCH_NET[b])
                res = net(leaf, batch["target"], normalize=True) if b == "lpips" else net(leaf, batch["target"])
                torch.autograd.grad(res.sum(), leaf)
                return
            br.real(b)
            feats = br.fake(b)
            feats = feats if isinstance(feats, tuple) else (feats,)
            torch.autograd.grad(sum(f.sum() for f in feats), leaf)
        out[b] = count_flops(work)
    return out


class _Setup:
    """What every variant shares: data, generator, frozen networks, discriminators, optimisers."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.device = cfg, pick_device(cfg.train.device)
        self.ds = make_datasets(cfg)["train"]
        self.gen = self.ds.spec.build().to(self.device)
        self.terms = cfg.active_terms
        self.mult = {t: cfg.multiplier(t) for t in self.terms}
        self.lab, self.ref = cfg.content_lab, cfg.content_vs_reference
        self.nets = FrozenNets(self.terms, cfg.backbone_weights, cfg.features.vit_img_size,
                               cfg.features.input).to(self.device)
        self.discs = build_discriminators(self.terms, self.nets, tuple(self.ds[0]["reference"].shape[-2:]), self.lab,
                                          self.device)
        o = cfg.optim
        self.g_opt = torch.optim.Adam(self.gen.parameters(), lr=o.g_lr, betas=(o.g_beta1, o.g_beta2))
        self.groups = {}
        for g, lr, every in (("color", o.d_color_lr, o.d_color_every),
                             ("texture", o.d_texture_lr, o.d_texture_every)):
            ts = [t for t in self.discs if LOSSES.get(t).group == g]
            if ts:
                self.groups[g] = (ts, torch.optim.Adam([p for t in ts for p in self.discs[t].parameters()], lr=lr),
                                  every)
        self.d_terms = [t for ts, _, _ in self.groups.values() for t in ts]
        self.loader = torch.utils.data.DataLoader(self.ds, batch_size=min(cfg.train.batch_size, len(self.ds)),
                                                  shuffle=True, drop_last=True, num_workers=cfg.data.workers)
        self.keys = STEP_KEYS
        self.branches = {LOSSES.get(t).branch for t in self.terms if LOSSES.get(t).branch}

    def batches(self):
        while True:
            for b in self.loader:
                yield {k: v.to(self.device) if k in self.keys else v for k, v in b.items()}

    def g_step(self, batch, naive: bool, cache: RealCache | None, counter=None, timer=None):
        """The trainer's generator step; ``naive``: with the textbook DLA (whose D steps recompute D(real))."""
        opts = GeneratorStepOptions(self.lab, self.cfg.losses.dla, self.cfg.losses.dla_eps, self.ref,
                                    d_terms=self.d_terms, real_cache=cache, textbook_dla=naive)
        return generator_step(self.gen, self.g_opt, batch, self.nets, self.discs, self.mult, opts,
                              StepProbes(counter, timer))[1]

    def d_step(self, g: str, br: Branches, naive: bool) -> None:
        ts, opt, _ = self.groups[g]
        discriminator_step(ts, br, self.discs, opt, self.cfg.losses.r_gamma, self.cfg.optim.d_clip)

    def fill(self, cache: RealCache) -> float:
        """One pass over the training split through the cached real branches; returns seconds."""
        t0 = time.perf_counter()
        for b in self.loader:
            b = {k: v.to(self.device) if k in self.keys else v for k, v in b.items()}
            br = Branches(self.nets, b["input"], b, self.lab, content_ref=self.ref, real_cache=cache)
            for branch in self.branches & set(CACHED_BRANCHES):
                br.real(branch)
        return time.perf_counter() - t0


class _Variant:
    """One way of stepping (ours, ours with the cache, naive): its timings, backward counts and FLOPs."""

    def __init__(self, s: _Setup, naive: bool, cache: RealCache | None) -> None:
        self.s, self.naive, self.cache = s, naive, cache
        self.timer: dict[str, float] = {}
        self.counter: Counter = Counter()
        self.total = self.cpu = 0.0
        self.compute_s: list[float] = []  # per timed step, without the data wait (the same for every variant)

    def step(self, batch: dict, data_wait: float, timed: bool) -> None:
        s = self.s
        t0, c0 = time.perf_counter(), time.process_time()
        step_timer: dict[str, float] = {"data_wait": data_wait}
        step_counter: Counter = Counter()
        br = s.g_step(batch, self.naive, self.cache, step_counter, step_timer)
        g_s = time.perf_counter() - t0
        for g, (_, _, every) in s.groups.items():
            t = time.perf_counter()
            s.d_step(g, br, self.naive)
            step_timer[f"d_step_{g}"] = (time.perf_counter() - t) / every  # at its real ratio
        if timed:
            d_s = sum(v for k, v in step_timer.items() if k.startswith("d_step_"))
            self.total += data_wait + g_s + d_s
            self.compute_s.append(g_s + d_s)
            self.cpu += time.process_time() - c0  # this process's CPU seconds: what other load does not inflate
            for k, v in step_timer.items():
                self.timer[k] = self.timer.get(k, 0.0) + v
            self.counter.update(step_counter)

    def result(self, batch: dict, steps: int) -> dict[str, Any]:
        s = self.s
        holder: dict[str, Any] = {}
        g_flops = count_flops(lambda: holder.update(br=s.g_step(batch, self.naive, self.cache)))
        d_flops = {g: count_flops(lambda g=g: s.d_step(g, holder["br"], self.naive)) for g in s.groups}
        passes = {b: self.counter[b] / steps for b in sorted(s.branches)}
        return {"step_ms": 1000 * self.total / steps, "step_cpu_ms": 1000 * self.cpu / steps,
                "compute_ms_median": 1000 * statistics.median(self.compute_s),
                "time_ms": {k: 1000 * v / steps for k, v in self.timer.items()},
                "flops_per_step": g_flops + sum(d_flops[g] / s.groups[g][2] for g in s.groups),
                "flops_generator_step": g_flops, "flops_d_step": d_flops,
                "frozen_backward_passes_by_branch": passes, "frozen_backward_passes": sum(passes.values())}


def bench_train(cfg: TrainConfig, steps: int = 5, against_naive: bool = False,
                compare_cache: bool = False) -> dict[str, Any]:
    """Profile ``steps`` training steps of ``cfg`` (see the module docstring); returns one flat-ish dict. The
    variants take turns on the same batches, step by step, so a change in machine load hits them alike."""
    if compare_cache:
        train_config_from_dict(to_dict(replace(cfg, features=replace(cfg.features, cache_real=True))),
                               name="bench-train --compare-cache")  # refuses augmented / cropped data (one line)
    s = _Setup(cfg)
    it = s.batches()
    tmp = tempfile.mkdtemp(prefix="isp-search-bench-real-")
    try:
        dtype = "float32"  # bench-train runs without autocast
        use = cfg.features.cache_real is True or (cfg.features.cache_real == "auto"
                                                  and varying_real_images(cfg, s.ds) is None)
        use = use and not compare_cache  # --compare-cache: ours without, then with
        on = replace(cfg, features=replace(cfg.features, cache_real=True))
        caches = {}
        if use or compare_cache:
            caches["cache"] = open_real_cache(on, s.ds, s.nets, s.device, dtype, tmp)
            caches["fill_s"] = s.fill(caches["cache"])
        variants = {"ours": _Variant(s, False, caches["cache"] if use else None)}
        if compare_cache:
            variants["cache"] = _Variant(s, False, caches["cache"])
        if against_naive:
            variants["naive"] = _Variant(s, True, None)
        for i in range(steps + 1):  # step 0 is a warm-up
            t0 = time.perf_counter()
            batch = next(it)
            wait = time.perf_counter() - t0
            for v in variants.values():
                v.step(batch, wait, timed=i > 0)
        batch = next(it)
        out = {k: v.result(batch, steps) for k, v in variants.items()}
        ours = out["ours"]
        res: dict[str, Any] = {"config_mode": cfg.mode, "arch": cfg.model.arch, "device": str(s.device),
                               "steps": steps, "batch_size": min(cfg.train.batch_size, len(s.ds)),
                               "cache_real": use, "d_every": {g: v[2] for g, v in s.groups.items()}, **ours}
        if use:
            res.update(cache_fill_s=caches["fill_s"], cache_bytes=caches["cache"].nbytes())
        if compare_cache:
            res["cache_real_variant"] = {**out["cache"], "cache_fill_s": caches["fill_s"],
                                         "cache_bytes": caches["cache"].nbytes()}
        if against_naive:
            res["naive"] = out["naive"]
            res["naive_ratio"] = out["naive"]["step_ms"] / ours["step_ms"]
            res["naive_cpu_ratio"] = out["naive"]["step_cpu_ms"] / ours["step_cpu_ms"]
            res["naive_flops_ratio"] = out["naive"]["flops_per_step"] / ours["flops_per_step"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with torch.no_grad():
        y = s.gen(batch["input"]).float()
    floor = floor_flops(s.nets, batch, y, s.branches, s.lab, s.ref)
    floor_total = sum(floor.values())
    passes = ours["frozen_backward_passes_by_branch"]
    res.update({"floor_flops_per_step": floor_total, "floor_flops_by_branch": floor,
                "flops_ratio_to_floor": ours["flops_per_step"] / floor_total if floor_total else None,
                "frozen_backward_passes_per_branch": max(passes.values()) if passes else 0,
                "n_terms_with_branch": sum(1 for t in s.terms if LOSSES.get(t).branch),
                "n_branches": len(s.branches)})
    return res


SIZE_STEP = 16  # the ViT's patch: features.vit_img_size must be a multiple of it


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"64,128,256"`` → ``(64, 128, 256)``; a user error naming ``--sizes`` for anything else."""
    sizes = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) <= 0 or int(part) % SIZE_STEP:
            raise UserError(f"--sizes: {part.strip()!r} is not a size the ViT can take; give square sizes in "
                            f"pixels, positive multiples of {SIZE_STEP}, comma-separated (e.g. --sizes 64,128,256,448)")
        sizes.append(int(part))
    return tuple(sizes)


def config_at_size(cfg: TrainConfig, size: int, root: str | Path) -> TrainConfig:
    """``cfg`` on the whole ``size``² images at ``root`` (no crops or augmentation, so the real-feature cache is
    valid), the ViT at ``min(size, features.vit_img_size)``: the paper configs' 224 at 256² and 448², the image size
    below (as the synthetic configs do). Data in the main process: the bench times compute, not loading."""
    data = replace(cfg.data, root=str(root), synthetic=False, patch_size=None, augment=False, splits=None,
                   n_val=None, n_test=None, workers=0)
    features = replace(cfg.features, vit_img_size=min(size, cfg.features.vit_img_size))
    return train_config_from_dict(to_dict(replace(cfg, data=data, features=features)),
                                  name=f"bench-train --sizes {size}")


def bench_sizes(cfg: TrainConfig, sizes: tuple[int, ...], steps: int = 3) -> list[dict[str, Any]]:
    """Per size, one row: ours without and with ``features.cache_real``, the textbook DLA, each the median over
    ``steps`` interleaved steps (compute only: the shared data wait left out) and FLOPs per step, on a synthetic set
    of the config's format with whole ``size``² images (``2 × batch`` training images, in a temporary folder)."""
    if cfg.data.format not in SYNTH_FORMATS:
        raise UserError(f"--sizes: benchmarks on a synthetic {cfg.data.format!r} set, which cannot be written; "
                        f"data.format must be one of {', '.join(SYNTH_FORMATS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="isp-search-bench-sizes-") as tmp:
        for size in sizes:
            root = synthesize(Path(tmp) / str(size), cfg.data.format, n_train=2 * cfg.train.batch_size, n_val=1,
                              n_test=1, size=size)
            sized = config_at_size(cfg, size, root)
            r = bench_train(sized, steps, against_naive=True, compare_cache=True)
            c, n = r["cache_real_variant"], r["naive"]
            rows.append({
                "size": size, "vit_img_size": sized.features.vit_img_size, "batch_size": r["batch_size"],
                "steps": steps, "device": r["device"],
                "ours_ms": r["compute_ms_median"], "ours_gflop": r["flops_per_step"] / 1e9,
                "cache_ms": c["compute_ms_median"], "cache_gflop": c["flops_per_step"] / 1e9,
                "naive_ms": n["compute_ms_median"], "naive_gflop": n["flops_per_step"] / 1e9,
                "floor_gflop": r["floor_flops_per_step"] / 1e9,
                "cache_to_floor": c["flops_per_step"] / r["floor_flops_per_step"],
                "cache_ms_ratio": c["compute_ms_median"] / r["compute_ms_median"],
                "cache_flops_ratio": c["flops_per_step"] / r["flops_per_step"],
                "ours_time_ms": r["time_ms"], "cache_time_ms": c["time_ms"],
                "floor_gflop_by_branch": {b: f / 1e9 for b, f in r["floor_flops_by_branch"].items()},
                "cache_fill_s": c["cache_fill_s"]})
    return rows
