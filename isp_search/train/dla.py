"""Dynamic Loss Adaptation (SPEC §5) with one backward per frozen branch.

For every generator term Lᵢ: wᵢ = mᵢ / (‖∇θ Lᵢ‖₂ + eps), the global L2 norm over all generator parameters,
detached and recomputed every step; the generator gradient is Σ wᵢ ∇θ Lᵢ, so each term reaches the generator with
gradient norm mᵢ.

How: the losses are computed on a leaf copy ŷ of the generator output. Each branch (the terms reading the same
frozen network) is backpropagated once to ŷ — terms that share a branch get their separate gᵢ = ∂Lᵢ/∂ŷ from one
vmapped backward (``is_grads_batched``) — and each gᵢ is then pulled back through the small generator alone
(a vector-Jacobian product), never through a frozen network again.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch


def output_gradients(losses: Mapping[str, torch.Tensor], branch_of: Mapping[str, str | None],
                     y_leaf: torch.Tensor) -> dict[str, torch.Tensor]:
    """gᵢ = ∂Lᵢ/∂ŷ for every term, with exactly one backward pass per branch."""
    groups: dict[str | None, list[str]] = defaultdict(list)
    for name in losses:
        key = branch_of.get(name)
        groups[key if key is not None else f"__pixel_{name}"].append(name)
    out: dict[str, torch.Tensor] = {}
    for names in groups.values():
        if len(names) == 1:
            (g,) = torch.autograd.grad(losses[names[0]], y_leaf, allow_unused=True)
            out[names[0]] = torch.zeros_like(y_leaf) if g is None else g
            continue
        eye = torch.eye(len(names), dtype=losses[names[0]].dtype, device=y_leaf.device)
        (g,) = torch.autograd.grad([losses[n] for n in names], y_leaf,
                                   grad_outputs=[eye[:, i].contiguous() for i in range(len(names))],
                                   is_grads_batched=True, allow_unused=True)
        for i, n in enumerate(names):
            out[n] = torch.zeros_like(y_leaf) if g is None else g[i]
    return out


def parameter_gradients(y: torch.Tensor, params: list[torch.nn.Parameter], g: torch.Tensor) -> list[torch.Tensor]:
    """∇θ L = Jᵀ g through the generator only (``y`` keeps its graph for the next term)."""
    grads = torch.autograd.grad(y, params, grad_outputs=g.to(y.dtype), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)]


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads))


def combine(y: torch.Tensor, y_leaf: torch.Tensor, losses: Mapping[str, torch.Tensor],
            branch_of: Mapping[str, str | None], params: list[torch.nn.Parameter],
            multipliers: Mapping[str, float], adapt: bool = True,
            eps: float = 1e-8) -> tuple[list[torch.Tensor], dict[str, float]]:
    """The generator gradient Σ wᵢ ∇θLᵢ and named metrics (``dla/norm_<term>`` raw norms, ``dla/weight_<term>``,
    ``loss/<term>``, ``loss/total`` = Σ wᵢ Lᵢ). ``adapt=False`` uses wᵢ = mᵢ (a plain weighted sum)."""
    gs = output_gradients(losses, branch_of, y_leaf)
    total = [torch.zeros_like(p) for p in params]
    metrics: dict[str, float] = {}
    weighted = 0.0
    for name, g in gs.items():
        grads = parameter_gradients(y, params, g)
        norm = float(global_norm(grads))
        w = multipliers[name] / (norm + eps) if adapt else multipliers[name]
        for acc, gr in zip(total, grads):
            acc.add_(gr, alpha=w)
        value = float(losses[name].detach())
        weighted += w * value
        metrics[f"loss/{name}"] = value
        metrics[f"dla/norm_{name}"] = norm
        metrics[f"dla/weight_{name}"] = w
    metrics["loss/total"] = weighted
    metrics["dla/norm_total"] = float(global_norm(total))
    return total, metrics
