"""Probes of a trained unpaired GAN's mechanism, on held-out images (``isp-search check-method``).

The colour distance of the learnability check says whether the method reached the target look; these say whether
it got there the way docs/method.md §4.7–§5 say, from the trained generator and discriminators of a run's ``last.pt``:

- **margin**: D(real) − D(fake) of every discriminator on the held-out target-domain images and the generator's
  outputs for the held-out RAW — a discriminator that learned its job scores the target domain higher;
- **penalty**: R1 and R2 as they hold on those images, (γ/2)·E‖∇ₓD(x)‖² at the real and the fake *feature
  tensors* x each discriminator reads (what the zero-centred penalties keep small);
- **D update**: the gradient the trainer's own discriminator step hands its optimiser, against the gradient of
  docs/method.md §4.7's loss written here, E[softplus(−(D(real) − D(fake)))] + R1 + R2 on the feature tensors (relative error
  ~0 when the step is what docs/method.md §4.7 says; large if the penalty is on the images, the roles are swapped or no
  gradient reaches the optimiser);
- **DLA share**: the gradient the trainer's own generator step hands its optimiser, decomposed on each term's own
  parameter gradient ∇θLᵢ (computed here through the whole graph, not by :mod:`isp_search.train.dla`) as
  Σ cᵢ∇θLᵢ; ``cᵢ·‖∇θLᵢ‖ / mᵢ`` is term i's share. docs/method.md §5's wᵢ = mᵢ/(‖∇θLᵢ‖ + eps) makes it
  ‖∇θLᵢ‖/(‖∇θLᵢ‖ + eps) (1 but for a term with a tiny gradient); a plain sum makes it ‖∇θLᵢ‖, and a flipped
  adversarial gradient makes the adversarial shares negative.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from isp_search.models.checkpoint import load_generator
from isp_search.train.losses import LOSSES
from isp_search.train.step import (
    Branches,
    FrozenNets,
    GeneratorStepOptions,
    build_discriminators,
    discriminator_step,
    generator_step,
    pick_output,
    term_loss,
)


def load_trained(run_dir: Path, cfg) -> dict[str, Any]:
    """The trained generator and discriminators of ``run_dir/checkpoints/last.pt`` with the run's frozen nets."""

    last = Path(run_dir) / "checkpoints" / "last.pt"
    gen = load_generator(last).model
    nets = FrozenNets(cfg.active_terms, cfg.backbone_weights, cfg.features.vit_img_size, cfg.features.input)
    state = torch.load(last, map_location="cpu", weights_only=False)["optim_state"]["discriminators"]
    probe_hw = (cfg.data.patch_size, cfg.data.patch_size)
    discs = build_discriminators(cfg.active_terms, nets, probe_hw, cfg.content_lab, torch.device("cpu"))
    for t, sd in state.items():
        discs[t].load_state_dict(sd)
    return {"gen": gen, "nets": nets, "discs": discs.eval()}


class _GradCapture(torch.optim.Optimizer):
    """An optimiser that changes nothing and keeps the gradient each ``step()`` was given (the update direction
    the trainer's step produced, read exactly instead of from rounded parameter differences)."""

    def __init__(self, params) -> None:
        super().__init__(list(params), {})
        self.grad: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        ps = [p for group in self.param_groups for p in group["params"]]
        self.grad = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in ps]).clone()


def _features(nets, term: str, img: torch.Tensor) -> torch.Tensor:
    spec = LOSSES.get(term)
    br = Branches(nets, img, {"target": img, "reference": img}, False)
    return pick_output(br.real(spec.branch), spec.output).detach()


def margins_and_penalties(trained: Mapping[str, Any], batch: Mapping[str, torch.Tensor],
                          gamma: float) -> dict[str, dict[str, float]]:
    """Per discriminator: ``margin`` = mean D(real) − mean D(fake), and ``r1``/``r2`` = (γ/2)·E‖∇ₓD(x)‖² at the
    real/fake feature tensors. ``batch``: ``input`` (held-out RAW) and ``target`` (held-out target-domain RGB)."""
    gen, nets, discs = trained["gen"].eval(), trained["nets"], trained["discs"]
    with torch.no_grad():
        fake_img = gen(batch["input"]).float()
    out: dict[str, dict[str, float]] = {}
    for t in discs:
        res: dict[str, float] = {}
        scores = {}
        for side, img in (("r1", batch["target"]), ("r2", fake_img)):
            x = _features(nets, t, img).float().requires_grad_(True)
            d = discs[t](x)
            (g,) = torch.autograd.grad(d.sum(), x)
            res[side] = float(0.5 * gamma * g.pow(2).flatten(1).sum(1).mean())
            scores[side] = float(d.detach().mean())
        res["margin"] = scores["r1"] - scores["r2"]
        out[t] = res
    return out


def d_update_errors(trained: Mapping[str, Any], batch: Mapping[str, torch.Tensor], gamma: float) -> dict[str, float]:
    """Per discriminator: ‖u − g‖ / ‖g‖, where u is the gradient one :func:`discriminator_step` (no clipping, on a
    copy) hands its optimiser on ``batch`` and g the gradient of the docs/method.md §4.7 loss computed here."""


    gen, nets = trained["gen"].eval(), trained["nets"]
    with torch.no_grad():
        y = gen(batch["input"]).float()
    out: dict[str, float] = {}
    for t in trained["discs"]:
        disc = copy.deepcopy(trained["discs"][t]).train()
        params = list(disc.parameters())
        xr = _features(nets, t, batch["target"]).float().requires_grad_(True)
        xf = _features(nets, t, y).float().requires_grad_(True)
        dr, df = disc(xr), disc(xf)
        loss = F.softplus(-(dr - df)).mean()
        for d, x in ((dr, xr), (df, xf)):
            (gx,) = torch.autograd.grad(d.sum(), x, create_graph=True)
            loss = loss + 0.5 * gamma * gx.pow(2).flatten(1).sum(1).mean()
        want = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
        br = Branches(nets, y, batch, False)
        cap = _GradCapture(params)
        discriminator_step([t], br, {t: disc}, cap, gamma, None)
        got = cap.grad if cap.grad is not None else torch.zeros_like(want)
        out[t] = float((got - want).norm() / want.norm().clamp_min(1e-30))
    return out


def dla_shares(trained: Mapping[str, Any], batch: Mapping[str, torch.Tensor], cfg) -> dict[str, dict[str, float]]:
    """Each generator term's share of the update direction the trainer's :func:`generator_step` hands its
    optimiser (on a copy of the trained generator), Σ cᵢ∇θLᵢ, is solved for cᵢ by least squares on the terms'
    own gradients, and the share is cᵢ·‖∇θLᵢ‖ / mᵢ; ``expected`` is what docs/method.md §5 makes it (with DLA: ‖∇θLᵢ‖/(‖∇θLᵢ‖ + eps),
    every term reaching the generator with norm ≈ mᵢ; without: ‖∇θLᵢ‖)."""

    nets, discs = trained["nets"], trained["discs"]
    multipliers = {t: cfg.multiplier(t) for t in cfg.active_terms}
    gen = copy.deepcopy(trained["gen"]).train()
    params = [p for p in gen.parameters() if p.requires_grad]
    own = []
    for t in multipliers:  # ∇θLᵢ through the whole graph, one term at a time
        y = gen(batch["input"]).float()
        br = Branches(nets, y, batch, cfg.content_lab, content_ref=cfg.content_vs_reference)
        grads = torch.autograd.grad(term_loss(t, br, discs), params, allow_unused=True)
        own.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
    cap = _GradCapture(params)
    opts = GeneratorStepOptions(cfg.content_lab, cfg.losses.dla, cfg.losses.dla_eps, cfg.content_vs_reference)
    metrics, _ = generator_step(gen, cap, batch, nets, discs, multipliers, opts)
    if "nonfinite" in metrics or cap.grad is None:
        raise RuntimeError(f"DLA probe: no generator update ({metrics.get('nonfinite', 'step not taken')})")
    update = cap.grad
    basis = torch.stack(own, dim=1).double()  # (P, T)
    coef = torch.linalg.lstsq(basis, update.double()[:, None]).solution[:, 0]
    eps = cfg.losses.dla_eps if cfg.losses.dla else None
    out = {}
    for i, (t, c) in enumerate(zip(multipliers, coef)):
        norm = float(basis[:, i].norm())
        out[t] = {"share": float(c) * norm / multipliers[t], "norm": norm,
                  "expected": norm / (norm + eps) if eps is not None else norm}
    return out


def probe(run_dir: Path, cfg, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """All the probes of the run's final models on one held-out batch."""
    trained = load_trained(run_dir, cfg)
    return {"discriminators": margins_and_penalties(trained, batch, cfg.losses.r_gamma),
            "d_update_error": d_update_errors(trained, batch, cfg.losses.r_gamma),
            "dla_share": dla_shares(trained, batch, cfg)}
