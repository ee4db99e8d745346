"""Image-quality metrics, each declaring once, next to its definition, whether lower is better: Ray ``mode``,
Optuna ``direction`` and leaderboard sorting all read :func:`direction`.

PSNR on RGB in [0, 1]; SSIM and MS-SSIM on RGB with TensorFlow's settings (:mod:`isp_search.ssim`); LPIPS (AlexNet,
v0.1, inputs mapped to [-1, 1]) and DISTS from pyiqa's architectures, built without any download: pretrained weights
come from :mod:`isp_search.weights`, or with ``weights_mode="random"`` the networks are randomly initialised and every
result says so in its ``lpips_weights`` field (it covers LPIPS and DISTS).
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from pyiqa.archs import dists_arch, lpips_arch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from isp_search import ssim as tf_ssim
from isp_search.errors import UserError
from isp_search.registry import Registry
from isp_search.weights import WeightsMode, check_mode, load_state_dict_file, load_torchvision, seeded_init


@dataclass(frozen=True)
class MetricSpec:
    name: str
    lower_better: bool
    needs_weights: bool  # depends on pretrained networks (so its value is labelled with the weights mode)
    build: Callable[[WeightsMode], nn.Module]  # module(pred, target) -> per-image values (B,)


METRICS: Registry[MetricSpec] = Registry("metric")
DEFAULT = ("psnr", "ssim", "ms_ssim", "lpips", "dists")
PSNR_MSE_FLOOR = 1e-10  # identical images: PSNR capped at 100 dB instead of inf


def metric(name: str, *, lower_better: bool, needs_weights: bool = False):
    """Register ``build(weights_mode) -> nn.Module`` as metric ``name`` with its direction."""

    def deco(build: Callable[[WeightsMode], nn.Module]):
        METRICS.add(name, MetricSpec(name, lower_better, needs_weights, build))
        return build

    return deco


def direction(name: str) -> str:
    """'min' or 'max' for a metric name (also ``val/<name>``, ``test/<name>``); unknown names raise UserError."""
    base = name.split("/")[-1]
    if base in ("latency_ms", "params", "macs"):  # costs, not image metrics: always minimised
        return "min"
    return "min" if METRICS.get(base).lower_better else "max"


class _PerImage(nn.Module):
    """A pairwise function (pred, target) -> (B,) as a module, so every metric moves with ``.to(device)``."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(pred, target)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1]."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(PSNR_MSE_FLOOR)
    return 10 * torch.log10(1.0 / mse)


@metric("psnr", lower_better=False)
def _psnr(mode: WeightsMode) -> nn.Module:
    return _PerImage(psnr)


@metric("ssim", lower_better=False)
def _ssim(mode: WeightsMode) -> nn.Module:
    return _PerImage(tf_ssim.ssim)


@metric("ms_ssim", lower_better=False)
def _ms_ssim(mode: WeightsMode) -> nn.Module:
    return _PerImage(tf_ssim.ms_ssim)


@contextlib.contextmanager
def _torchvision_without_download(module, mode: WeightsMode):
    """pyiqa's LPIPS/DISTS call ``torchvision.models.X(weights='IMAGENET1K_V1')``, which downloads; hand them the
    same architecture built from the resolver's local file (or random) instead."""
    original = module.models
    module.models = types.SimpleNamespace(
        **{n: (lambda n=n, **_: load_torchvision(n, mode)) for n in ("alexnet", "vgg16")})
    try:
        yield
    finally:
        module.models = original


def _frozen(net: nn.Module) -> nn.Module:
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def build_lpips(mode: WeightsMode, semantic: bool = False) -> nn.Module:
    """pyiqa LPIPS AlexNet v0.1 (pyiqa's ``lpips+`` with ``semantic=True``), frozen; call ``net(pred, target,
    normalize=True)`` with images in [0, 1]."""

    check_mode(mode)
    # Random heads (and trunk) from a fixed seed per network: the same random LPIPS in every process and trial.
    with _torchvision_without_download(lpips_arch, mode), seeded_init("lpips+" if semantic else "lpips"):
        net = lpips_arch.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=False,
                               semantic_weight_layer=2 if semantic else -1)
    if mode == "pretrained":
        heads = load_state_dict_file("lpips_alex_v0.1")
        want = {f"lin{i}.model.1.weight" for i in range(len(net.lins))}  # ``lins.i`` are the same modules
        if set(heads) != want:
            raise UserError(f"pretrained weights 'lpips_alex_v0.1': expected the keys {sorted(want)}, got "
                            f"{sorted(heads)[:5]}")
        net.load_state_dict(heads, strict=False)
    else:  # trained LPIPS heads are non-negative (clamped in training): random ones are kept so too
        for lin in net.lins:
            lin.model[-1].weight.data.abs_()
    return _frozen(net)


def build_dists(mode: WeightsMode) -> nn.Module:
    """pyiqa DISTS (VGG-16 trunk, alpha/beta), frozen; call ``net(pred, target)`` with images in [0, 1]."""

    check_mode(mode)
    with _torchvision_without_download(dists_arch, mode), seeded_init("dists"):  # random alpha/beta: fixed seed
        net = dists_arch.DISTS(pretrained=False)
    if mode == "pretrained":
        ab = load_state_dict_file("dists_alpha_beta")
        if set(ab) != {"alpha", "beta"} or ab["alpha"].shape != net.alpha.shape:
            raise UserError(f"pretrained weights 'dists_alpha_beta': expected alpha/beta of shape "
                            f"{tuple(net.alpha.shape)}, got {sorted(ab)}")
        net.alpha.data.copy_(ab["alpha"])
        net.beta.data.copy_(ab["beta"])
    return _frozen(net)


@metric("lpips", lower_better=True, needs_weights=True)
class _LPIPS(nn.Module):
    def __init__(self, mode: WeightsMode) -> None:
        super().__init__()
        self.net = build_lpips(mode)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred, target, normalize=True).flatten()  # normalize: [0, 1] -> [-1, 1]


@metric("dists", lower_better=True, needs_weights=True)
class _DISTS(nn.Module):
    def __init__(self, mode: WeightsMode) -> None:
        super().__init__()
        self.net = build_dists(mode)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.net(pred, target).flatten()


class Evaluator:
    """Builds the metric modules once; :meth:`update` per batch, :meth:`result` gives the means and labels.

    ``result()``: one float per metric, ``n_images``, ``lpips_weights`` ('pretrained' | 'random', when a metric
    needs weights) and ``ms_ssim_scales`` (the fewest MS-SSIM scales any image used; 5 is the standard).
    """

    def __init__(self, names: Iterable[str] | None = DEFAULT, weights_mode: WeightsMode = "pretrained",
                 device: str | torch.device = "cpu") -> None:
        self.names = list(names or DEFAULT)
        self.specs = [METRICS.get(n) for n in self.names]
        self.mode = check_mode(weights_mode)
        self.device = torch.device(device)
        self.modules = {s.name: s.build(self.mode).to(self.device).eval() for s in self.specs}
        self.reset()

    def reset(self) -> None:
        self.sums = {n: 0.0 for n in self.names}
        self.count = 0
        self.ms_ssim_scales: int | None = None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add a batch (B, 3, H, W) (both clamped to [0, 1]); returns its per-image values."""
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)}: "
                             f"expected one (B, 3, H, W) shape")
        pred = pred.to(self.device, torch.float32).clamp(0, 1)
        target = target.to(self.device, torch.float32).clamp(0, 1)
        values = {n: m(pred, target).float() for n, m in self.modules.items()}
        for n, v in values.items():
            self.sums[n] += float(v.sum())
        if "ms_ssim" in self.modules:
            n_scales = tf_ssim.ms_ssim_scales(*pred.shape[-2:])
            self.ms_ssim_scales = min(n_scales, self.ms_ssim_scales or n_scales)
        self.count += pred.shape[0]
        return values

    def result(self) -> dict:
        out: dict = {n: (self.sums[n] / self.count if self.count else math.nan) for n in self.names}
        out["n_images"] = self.count
        if any(s.needs_weights for s in self.specs):
            out["lpips_weights"] = self.mode
        if self.ms_ssim_scales is not None:
            out["ms_ssim_scales"] = self.ms_ssim_scales
        return out


_EVALUATORS: dict[tuple, Evaluator] = {}


def compute(pred: torch.Tensor, target: torch.Tensor, names: Iterable[str] | None = None,
            weights_mode: WeightsMode = "pretrained") -> dict:
    """Mean metrics of one batch (see :class:`Evaluator` for the keys); metric networks are built once per
    (names, mode, device) and reused."""
    key = (tuple(names or DEFAULT), check_mode(weights_mode), str(pred.device))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(key[0], weights_mode, pred.device)
    ev = _EVALUATORS[key]
    ev.reset()
    ev.update(pred, target)
    return ev.result()


@torch.no_grad()
def evaluate_model(model: nn.Module, spec, data, weights_mode: WeightsMode = "pretrained",
                   device: str | torch.device | None = None, names: Iterable[str] | None = DEFAULT,
                   evaluator: Evaluator | None = None, batch_size: int = 1) -> dict:
    """Mean metrics of ``model``'s clamped output over ``data`` against its ``paired_target``s.

    ``data``: a dataset of dicts with ``input`` and ``paired_target`` (batched here, ``batch_size``), or any
    iterable of such batches (a DataLoader). ``spec`` (a BackboneSpec or None) checks the input channels.
    ``device`` defaults to the model's. The model's train/eval mode is restored afterwards.
    """

    device = torch.device(device) if device is not None else next(model.parameters()).device
    ev = evaluator or Evaluator(names, weights_mode, device)
    ev.reset()
    batches = DataLoader(data, batch_size=batch_size, shuffle=False) if isinstance(data, Dataset) else data
    want_channels = None if spec is None else (4 if spec.input_layout == "packed" else 3)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if "paired_target" not in batch:
                raise UserError("evaluation needs paired RGB targets; this split has none (use a split with RGB "
                                "ground truth, e.g. val or test)")
            x = batch["input"]
            if want_channels is not None and x.shape[1] != want_channels:
                raise ValueError(f"{spec.name} takes {want_channels}-channel input, the data gives {tuple(x.shape)}")
            ev.update(model(x.to(device)).float(), batch["paired_target"])
    finally:
        model.train(was_training)
    return ev.result()
