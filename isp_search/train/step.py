"""One training step: :func:`generator_step` (losses + DLA + update) and :func:`discriminator_step` (per group).

Each frozen network runs once per image per step: :class:`Branches` caches the fake features (with gradient, from
the leaf copy ŷ of the generator output) and the real features (no gradient); the discriminator step reuses both.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Collection, Mapping

import torch
from torch import nn

from isp_search.metrics import build_dists, build_lpips
from isp_search.train import dla
from isp_search.train.discriminators import create_discriminator
from isp_search.train.features import LPIPSAlexTrunk, VGGRelu54, ViTTokens
from isp_search.train.losses import (
    LOSSES,
    blur,
    color_loss,
    grayscale,
    lab_lightness3,
    mse,
    relativistic_d,
    relativistic_g,
    tv_loss,
    zero_centered_penalty,
)
from isp_search.train.real_cache import CACHED_BRANCHES, RealCache

_NET_CACHE: dict[tuple[str, str, int, str], nn.Module] = {}
BRANCH_NET = {"content": "vgg", "vit": "vit", "alex_gray": "alex", "lpips": "lpips", "dists": "dists"}


class FrozenNets(nn.Module):
    """The frozen networks the active terms need (built once; nothing trainable)."""

    def __init__(self, terms: tuple[str, ...], weights: str, vit_img_size: int = 224,
                 inputs: str = "reference") -> None:
        """``inputs``: ``features.input`` (reference | normalized) of the discriminators' ViT and AlexNet."""
        super().__init__()

        needed = {BRANCH_NET[LOSSES.get(t).branch] for t in terms if LOSSES.get(t).branch}
        builders: dict[str, Callable[[], nn.Module]] = {
            "vgg": lambda: VGGRelu54(weights), "vit": lambda: ViTTokens(weights, vit_img_size, inputs),
            "alex": lambda: LPIPSAlexTrunk(weights, inputs), "lpips": lambda: build_lpips(weights, semantic=True),
            "dists": lambda: build_dists(weights),
        }
        for name in sorted(needed):
            key = (name, weights, vit_img_size if name == "vit" else 0, inputs if name in ("vit", "alex") else "")
            if key not in _NET_CACHE:  # frozen, so one copy per process serves every run (tests, search trials)
                _NET_CACHE[key] = builders[name]()
            self.add_module(name, _NET_CACHE[key])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenNets":
        return super().train(False)


class Branches:
    """Per-step feature cache. ``fake(b)`` differentiates to ``y_leaf``; ``real(b)`` is computed without gradient.

    ``content_lab``: the content branch reads the LAB L channel (pretrain, unpaired) instead of RGB (paired).
    ``content_ref``: the content term compares with the demosaiced reference, else the target (None: content_lab).
    ``counter`` (optional) counts gradient passes arriving at each branch's fake input (tests, bench-train).
    ``real_cache`` (optional): real features read from / stored in a :class:`RealCache` (``features.cache_real``).
    ``d_terms``: adversarial terms whose discriminator steps after this G step: their D(real) is computed once,
    with its graph, and handed to the D step (``d_real``).
    """

    def __init__(self, nets: FrozenNets, y_leaf: torch.Tensor, batch: Mapping[str, torch.Tensor], content_lab: bool,
                 autocast: contextlib.AbstractContextManager | None = None, counter: Counter | None = None,
                 content_ref: bool | None = None, real_cache: RealCache | None = None,
                 d_terms: Collection[str] = ()) -> None:
        self.nets, self.y, self.batch, self.content_lab = nets, y_leaf, batch, content_lab
        self.real_cache, self.d_terms = real_cache, frozenset(d_terms)
        self.d_real: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # term -> (D input, D output), one use
        self.content_ref = content_lab if content_ref is None else content_ref
        self.autocast = autocast or contextlib.nullcontext()
        self.counter = counter
        self._fake: dict[str, object] = {}
        self._real: dict[str, object] = {}

    def content_real_image(self) -> torch.Tensor:
        return self.batch["reference"] if self.content_ref else self.batch["target"]

    def _prepare(self, branch: str, img: torch.Tensor) -> torch.Tensor:
        if branch == "content":
            return lab_lightness3(img) if self.content_lab else img
        if branch == "vit":
            return blur(img)
        if branch == "alex_gray":
            return grayscale(img)
        return img

    def _run(self, branch: str, x: torch.Tensor):
        with self.autocast:
            return getattr(self.nets, BRANCH_NET[branch])(x)

    def fake_input(self, branch: str) -> torch.Tensor:
        x = self._prepare(branch, self.y)
        if x is self.y:
            x = self.y.view_as(self.y)  # a node of its own, so the counting hook sees only this branch
        if self.counter is not None and x.requires_grad:
            x.register_hook(lambda g, b=branch: self.counter.update([b]))
        return x

    def fake(self, branch: str):
        if branch not in self._fake:
            self._fake[branch] = self._run(branch, self.fake_input(branch))
        return self._fake[branch]

    def real(self, branch: str):
        if branch not in self._real:
            img = self.content_real_image() if branch == "content" else self.batch["target"]

            def compute():
                with torch.no_grad():
                    return self._run(branch, self._prepare(branch, img))

            if self.real_cache is not None and branch in CACHED_BRANCHES:
                by_sample = branch == "content" and self.content_ref  # the reference belongs to the RAW sample
                keys = self.batch["index" if by_sample else "target_index"]
                self._real[branch] = self.real_cache.get(branch, "sample" if by_sample else "target", keys, compute)
            else:
                self._real[branch] = compute()
        return self._real[branch]


class _Clock:
    """Adds the seconds since the previous lap to ``timer[name]`` (no-op without a timer)."""

    def __init__(self, timer: dict[str, float] | None) -> None:
        self.timer, self.now = timer, time.perf_counter
        self.t = self.now()

    def lap(self, name: str) -> None:
        if self.timer is not None:
            t = self.now()
            self.timer[name] = self.timer.get(name, 0.0) + t - self.t
            self.t = t


def pick_output(feats, index: int | None) -> torch.Tensor:
    """A branch's feature tensor, or output ``index`` of a branch with nested outputs."""
    return feats if index is None else feats[index]


def term_loss(name: str, br: Branches, discs: Mapping[str, nn.Module]) -> torch.Tensor:
    """The value of generator term ``name`` on this step's output (a scalar that differentiates to ŷ)."""
    y, batch = br.y, br.batch
    if name == "content":
        return mse(br.fake("content").float(), br.real("content").float())
    if name == "mse":
        return mse(y, batch["reference"])
    if name == "tv":
        return tv_loss(y)
    if name == "color":
        return color_loss(y, batch["target"])
    if name in ("lpips", "dists"):
        x = br.fake_input(name)
        with br.autocast:
            out = br.nets.lpips(x, batch["target"], normalize=True) if name == "lpips" else br.nets.dists(
                x, batch["target"])
        return out.float().mean()
    spec = LOSSES.get(name)
    disc = discs[name]
    fake = pick_output(br.fake(spec.branch), spec.output)
    real = pick_output(br.real(spec.branch), spec.output)
    with br.autocast:  # the discriminators read the features in the dtype they come in (no fp32 copies)
        if name in br.d_terms:  # its D step follows: D(real) once, with the graph that step's loss and R1 need
            x = real.detach().requires_grad_(True).view_as(real)  # a non-leaf view, as in _d_loss
            out = disc(x)
            br.d_real[name] = (x, out)
            d_real = out.detach()
        else:
            with torch.no_grad():
                d_real = disc(real)
        d_fake = disc(fake)
    return relativistic_g(d_fake.float(), d_real.float())


def build_discriminators(terms: tuple[str, ...], nets: FrozenNets, out_hw: tuple[int, int], content_lab: bool,
                         device: torch.device) -> nn.ModuleDict:
    """One discriminator per active adversarial term, sized from the frozen features of an ``out_hw`` image."""
    discs = nn.ModuleDict()
    adv = [t for t in terms if LOSSES.get(t).disc]
    if not adv:
        return discs
    probe = torch.zeros(1, 3, *out_hw, device=device)
    br = Branches(nets, probe, {"target": probe, "reference": probe}, content_lab)
    for t in adv:
        spec = LOSSES.get(t)
        shape = tuple(pick_output(br.real(spec.branch), spec.output).shape[1:])
        discs[t] = create_discriminator(spec.disc, shape).to(device)
    return discs


@dataclass(frozen=True)
class GeneratorStepOptions:
    """How :func:`generator_step` combines the losses (from the training config) and what it reuses."""

    content_lab: bool  # the content term on LAB lightness (else RGB)
    adapt: bool = True  # Dynamic Loss Adaptation (else the plain weighted sum)
    eps: float = 1e-8  # DLA's eps
    content_ref: bool | None = None  # the content term against the demosaiced reference (None: the mode's default)
    autocast: contextlib.AbstractContextManager | None = None  # bf16 on CUDA
    d_terms: Collection[str] = ()  # the adversarial terms whose D steps after this step (D(real) kept for it)
    real_cache: RealCache | None = None  # where the real-branch features are read from (features.cache_real)
    textbook_dla: bool = False  # bench-train --against-naive: per-term backwards through the frozen networks


@dataclass
class StepProbes:
    """What bench-train measures inside a step: backward passes per branch and seconds per phase."""

    counter: Counter | None = None
    timer: dict[str, float] | None = None


def generator_step(gen: nn.Module, g_opt: torch.optim.Optimizer, batch: Mapping[str, torch.Tensor],
                   nets: FrozenNets, discs: Mapping[str, nn.Module], multipliers: Mapping[str, float],
                   opts: GeneratorStepOptions, probes: StepProbes | None = None,
                   ) -> tuple[dict[str, float], Branches | None]:
    """Forward, losses, DLA, one Adam step. Returns metrics and the feature cache (for the D step); on a
    non-finite loss or gradient nothing is updated and ``metrics["nonfinite"]`` names the culprit.
    ``probes.timer`` (bench-train) accumulates seconds per phase: generator, frozen_forward, backward, optimizer."""
    probes = probes or StepProbes()
    clock = _Clock(probes.timer)
    gen.train()
    params = [p for p in gen.parameters() if p.requires_grad]
    y = gen(batch["input"]).float()
    # the frozen networks read a leaf copy of the output: DLA's per-term gradients stop there (docs/method.md §5)
    y_leaf = y if opts.textbook_dla else y.detach().requires_grad_(True)
    clock.lap("generator")
    br = Branches(nets, y_leaf, batch, opts.content_lab, opts.autocast, probes.counter, opts.content_ref,
                  opts.real_cache, () if opts.textbook_dla else opts.d_terms)
    losses = {t: term_loss(t, br, discs) for t in multipliers}
    clock.lap("frozen_forward")
    bad = [t for t, v in losses.items() if not torch.isfinite(v)]
    if bad:
        return {f"loss/{t}": float(v.detach()) for t, v in losses.items()} | {"nonfinite": bad[0]}, None
    if opts.textbook_dla:
        grads, metrics = dla.combine_textbook(losses, params, multipliers, opts.adapt, opts.eps)
    else:
        graph = dla.TermGraph({t: LOSSES.get(t).branch for t in losses},
                              {b: f for b, f in br._fake.items() if isinstance(f, tuple)},  # AlexNet (relu1, relu4)
                              {t: LOSSES.get(t).output for t in losses})
        grads, metrics = dla.combine(y, y_leaf, losses, graph, params, multipliers, opts.adapt, opts.eps)
    clock.lap("backward")
    if not all(torch.isfinite(g).all() for g in grads):
        return metrics | {"nonfinite": "generator gradient"}, None
    for p, g in zip(params, grads):
        p.grad = g
    g_opt.step()
    g_opt.zero_grad(set_to_none=True)
    clock.lap("optimizer")
    metrics["out/mean"] = float(y_leaf.detach().mean())
    return metrics, br


def discriminator_step(group_terms: list[str], br: Branches, discs: Mapping[str, nn.Module],
                       d_opt: torch.optim.Optimizer, gamma: float, clip: float | None) -> dict[str, float]:
    """Update one discriminator group on the G step's cached features (fake detached, same pre-update output)."""
    total = None
    metrics: dict[str, float] = {}
    for t in group_terms:
        spec = LOSSES.get(t)
        disc = discs[t]
        disc.train()
        with br.autocast:
            loss, parts = _d_loss(disc, pick_output(br.real(spec.branch), spec.output),
                                  pick_output(br.fake(spec.branch), spec.output), gamma, br.d_real.pop(t, None))
        total = loss if total is None else total + loss
        key = "d_" + t.removeprefix("adv_")
        metrics.update({f"{key}/{k}": v for k, v in parts.items()})
        metrics[f"{key}/loss"] = float(loss.detach())
    if total is None or not torch.isfinite(total):
        return metrics | ({"nonfinite": f"discriminator {group_terms}"} if total is not None else {})
    d_opt.zero_grad(set_to_none=True)
    total.backward()
    for t in group_terms:
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(discs[t].parameters(), clip)
            metrics[f"d_{t.removeprefix('adv_')}/grad_norm"] = float(norm)
    d_opt.step()
    return metrics


def _d_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, gamma: float,
            real_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Relativistic D loss + R1 + R2 on the detached features (:func:`losses.discriminator_loss`'s maths), reusing
    the G step's ``(D input, D(real))`` when given. The features stay in their dtype (no fp32 copies)."""
    # Non-leaf views: the penalty differentiates to them (torch's FLOP counter cannot hook grads of leaves).
    xr, d_real = real_out if real_out is not None else (None, None)
    if xr is None:
        xr = real.detach().requires_grad_(gamma > 0).view_as(real)
        d_real = disc(xr)
    xf = fake.detach().requires_grad_(gamma > 0).view_as(fake)
    d_fake = disc(xf)
    adv = relativistic_d(d_real.float(), d_fake.float())
    r1 = zero_centered_penalty(d_real, xr, gamma) if gamma > 0 else adv.new_zeros(())
    r2 = zero_centered_penalty(d_fake, xf, gamma) if gamma > 0 else adv.new_zeros(())
    parts = {k: float(v.detach().float().mean()) for k, v in
             (("real", d_real), ("fake", d_fake), ("adv", adv), ("r1", r1), ("r2", r2))}
    return adv + r1 + r2, parts
