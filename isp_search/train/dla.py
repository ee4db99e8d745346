"""Dynamic Loss Adaptation (docs/method.md §5) with one backward per frozen branch.

For every generator term Lᵢ: wᵢ = mᵢ / (‖∇θ Lᵢ‖₂ + eps), the global L2 norm over all generator parameters,
detached and recomputed every step; the generator gradient is Σ wᵢ ∇θ Lᵢ, so each term reaches the generator with
gradient norm mᵢ.

How: the losses are computed on a leaf copy ŷ of the generator output. Each branch (the terms reading the same
frozen network) is backpropagated once to ŷ — terms that share a branch get their separate gᵢ = ∂Lᵢ/∂ŷ from one
vmapped backward (``is_grads_batched``), or segment by segment where they read nested outputs (AlexNet relu1 and
relu4) — and each gᵢ is then pulled back through the small generator alone
(a vector-Jacobian product), never through a frozen network again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import torch


@dataclass(frozen=True)
class TermGraph:
    """Which frozen branch each term reads, and for a branch with nested outputs (each computed from the one
    before, e.g. the AlexNet trunk's relu1 and relu4) the outputs and the one each term reads."""

    branch_of: Mapping[str, str | None]
    features: Mapping[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    output_of: Mapping[str, int | None] = field(default_factory=dict)


def output_gradients(losses: Mapping[str, torch.Tensor], graph: TermGraph,
                     y_leaf: torch.Tensor) -> dict[str, torch.Tensor]:
    """gᵢ = ∂Lᵢ/∂ŷ for every term, with exactly one backward pass per branch; terms on a branch with nested
    outputs go down the network segment by segment (:func:`_nested_gradients`)."""
    branch_of, features, output_of = graph.branch_of, graph.features, graph.output_of
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
        branch = branch_of.get(names[0])
        if features and output_of and branch in features and all(output_of.get(n) is not None for n in names):
            out.update(_nested_gradients(names, losses, features[branch], output_of, y_leaf))
            continue
        eye = torch.eye(len(names), dtype=losses[names[0]].dtype, device=y_leaf.device)
        (g,) = torch.autograd.grad([losses[n] for n in names], y_leaf,
                                   grad_outputs=[eye[:, i].contiguous() for i in range(len(names))],
                                   is_grads_batched=True, allow_unused=True)
        for i, n in enumerate(names):
            out[n] = torch.zeros_like(y_leaf) if g is None else g[i]
    return out


def _nested_gradients(names: list[str], losses: Mapping[str, torch.Tensor], outs: tuple[torch.Tensor, ...],
                      output_of: Mapping[str, int | None], y_leaf: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gᵢ of terms reading nested outputs of one network (the AlexNet trunk's relu4 is computed from its
    relu1): from the deepest output up, each segment is backpropagated once carrying one vector per term that
    reaches it (batched only where several do), so relu4's term alone pays for layers 2-4 and both share one
    batched pass through layer 1 — instead of a batched backward of every term through the whole network."""
    carried: list[str] = []
    vec: torch.Tensor | None = None  # (len(carried), *outs[k].shape)
    for k in range(len(outs) - 1, -1, -1):
        for n in (n for n in names if output_of[n] == k):  # through its discriminator only
            (g,) = torch.autograd.grad(losses[n], outs[k], retain_graph=True, allow_unused=True)
            g = (torch.zeros_like(outs[k]) if g is None else g)[None]
            vec = g if vec is None else torch.cat([vec, g])
            carried.append(n)
        if vec is None:
            continue
        dst, last = (outs[k - 1], False) if k > 0 else (y_leaf, True)
        batched = len(carried) > 1
        (g,) = torch.autograd.grad(outs[k], dst, grad_outputs=vec if batched else vec[0], retain_graph=not last,
                                   is_grads_batched=batched, allow_unused=True)
        vec = torch.zeros((len(carried), *dst.shape), dtype=dst.dtype, device=dst.device) if g is None else (
            g if batched else g[None])
    return {n: vec[i] for i, n in enumerate(carried)}  # type: ignore[index]


def parameter_gradients(y: torch.Tensor, params: list[torch.nn.Parameter], g: torch.Tensor) -> list[torch.Tensor]:
    """∇θ L = Jᵀ g through the generator only (``y`` keeps its graph for the next term)."""
    grads = torch.autograd.grad(y, params, grad_outputs=g.to(y.dtype), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)]


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum((gr.float() ** 2).sum() for gr in grads))


def combine(y: torch.Tensor, y_leaf: torch.Tensor, losses: Mapping[str, torch.Tensor], graph: TermGraph,
            params: list[torch.nn.Parameter], multipliers: Mapping[str, float], adapt: bool = True,
            eps: float = 1e-8) -> tuple[list[torch.Tensor], dict[str, float]]:
    """The generator gradient Σ wᵢ ∇θLᵢ and named metrics (``dla/norm_<term>`` raw norms, ``dla/weight_<term>``,
    ``loss/<term>``, ``loss/total`` = Σ wᵢ Lᵢ). ``adapt=False`` uses wᵢ = mᵢ (a plain weighted sum)."""
    gs = output_gradients(losses, graph, y_leaf)
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


def combine_textbook(losses: Mapping[str, torch.Tensor], params: list[torch.nn.Parameter],
                     multipliers: Mapping[str, float], adapt: bool = True,
                     eps: float = 1e-8) -> tuple[list[torch.Tensor], dict[str, float]]:
    """The textbook DLA, for comparison (``bench-train --against-naive``): per term a backward through its frozen
    network to the generator parameters (for its norm), then one backward of Σ wᵢ Lᵢ. Same weights and metrics as
    :func:`combine`; ``losses`` must hold the graph through the generator (no leaf copy of its output)."""
    metrics: dict[str, float] = {}
    weights: dict[str, float] = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        norm = float(global_norm([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]))
        weights[name] = multipliers[name] / (norm + eps) if adapt else multipliers[name]
        metrics[f"loss/{name}"] = float(loss.detach())
        metrics[f"dla/norm_{name}"] = norm
        metrics[f"dla/weight_{name}"] = weights[name]
    total_loss = sum(weights[t] * loss for t, loss in losses.items())
    grads = torch.autograd.grad(total_loss, params, allow_unused=True)
    total = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    metrics["loss/total"] = float(total_loss.detach())
    metrics["dla/norm_total"] = float(global_norm(total))
    return total, metrics
