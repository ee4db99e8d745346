"""Image-quality metrics, each declaring once whether lower is better (Ray ``mode``, Optuna ``direction`` and
leaderboard sorting all read :func:`direction`).

PSNR on RGB in [0, 1]; SSIM and MS-SSIM on RGB with TensorFlow's settings (11x11 Gaussian, sigma 1.5, k1 0.01,
k2 0.03, 'valid' filtering; MS-SSIM 5 scales with the standard weights) from pyiqa's functions; LPIPS (AlexNet,
v0.1, inputs mapped to [-1, 1]) and DISTS from pyiqa's architectures, built without any download: pretrained
weights come from :mod:`isp_search.weights`, or the networks stay random and the result says ``random``.
"""

from __future__ import annotations

import contextlib
import math
import types
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from isp_search.registry import Registry
from isp_search.weights import WeightsMode, check_mode, load_torchvision, require

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN = 11


@dataclass(frozen=True)
class MetricSpec:
    name: str
    lower_better: bool
    needs_weights: bool
    build: Callable[[WeightsMode], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]  # -> per-image values


METRICS: Registry[MetricSpec] = Registry("metric")


def direction(name: str) -> str:
    """'min' or 'max' for a metric name (also accepts ``val/<name>``/``test/<name>``)."""
    base = name.split("/")[-1]
    if base in ("latency_ms", "latency", "params", "macs"):
        return "min"
    return "min" if METRICS.get(base).lower_better else "max"


def _psnr(mode):
    def f(x, y):
        mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-12)
        return 10 * torch.log10(1.0 / mse)
    return f


def _ssim(mode):
    from pyiqa.archs.ssim_arch import ssim

    return lambda x, y: ssim(x, y, data_range=1.0)


def ms_ssim_scales(h: int, w: int) -> int:
    """Scales that fit: the coarsest must still hold an 11x11 window ('valid' filtering)."""
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and min(h, w) // 2**n >= WIN:
        n += 1
    return n


def _ms_ssim(mode):
    import torch.nn.functional as F
    from pyiqa.archs.ssim_arch import ssim

    def f(x, y):
        n = ms_ssim_scales(*x.shape[-2:])
        w = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=x.dtype, device=x.device)
        w = w / w.sum()  # fewer scales for small images: weights renormalised (5 scales need >= 176 px)
        out = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(n):
            s, cs = ssim(x, y, get_cs=True, data_range=1.0)
            out = out * (s.clamp_min(0) if i == n - 1 else cs.clamp_min(0)) ** w[i]
            if i < n - 1:
                pad = (x.shape[2] % 2, x.shape[3] % 2)
                x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
        return out
    return f


@contextlib.contextmanager
def _torchvision_without_download(module, mode: WeightsMode):
    """pyiqa's LPIPS/DISTS call ``torchvision.models.X(weights='IMAGENET1K_V1')``, which downloads; hand them the
    same architecture built from the resolver's local file (or random) instead."""
    original = module.models
    shim = types.SimpleNamespace(**{n: (lambda n=n, **_: load_torchvision(n, mode)) for n in ("alexnet", "vgg16")})
    module.models = shim
    try:
        yield
    finally:
        module.models = original


def build_lpips(mode: WeightsMode, semantic: bool = False) -> torch.nn.Module:
    """pyiqa LPIPS AlexNet v0.1 (``lpips+`` with ``semantic=True``), frozen."""
    from pyiqa.archs import lpips_arch

    check_mode(mode)
    with _torchvision_without_download(lpips_arch, mode):
        net = lpips_arch.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=False,
                               semantic_weight_layer=2 if semantic else -1)
    if mode == "pretrained":
        heads = torch.load(require("lpips_alex_v0.1"), map_location="cpu", weights_only=True)
        missing = net.load_state_dict(heads, strict=False)
        assert not [k for k in missing.missing_keys if k.startswith("lin")], missing
    else:  # LPIPS heads are non-negative by construction (trained with a clamp): keep random ones so too
        for lin in net.lins:
            lin.model[-1].weight.data.abs_()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def build_dists(mode: WeightsMode) -> torch.nn.Module:
    from pyiqa.archs import dists_arch

    check_mode(mode)
    with _torchvision_without_download(dists_arch, mode):
        net = dists_arch.DISTS(pretrained=False)
    if mode == "pretrained":
        ab = torch.load(require("dists_alpha_beta"), map_location="cpu", weights_only=True)
        net.alpha.data.copy_(ab["alpha"])
        net.beta.data.copy_(ab["beta"])
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _lpips(mode):
    net = build_lpips(mode)
    return lambda x, y: net(x, y, normalize=True).flatten()


def _dists(mode):
    net = build_dists(mode)
    return lambda x, y: net(x, y).flatten()


METRICS.add("psnr", MetricSpec("psnr", False, False, _psnr))
METRICS.add("ssim", MetricSpec("ssim", False, False, _ssim))
METRICS.add("ms_ssim", MetricSpec("ms_ssim", False, False, _ms_ssim))
METRICS.add("lpips", MetricSpec("lpips", True, True, _lpips))
METRICS.add("dists", MetricSpec("dists", True, True, _dists))

DEFAULT = ("psnr", "ssim", "ms_ssim", "lpips", "dists")


class Evaluator:
    """Builds the metric networks once; ``update`` per batch, ``result`` gives means plus labels."""

    def __init__(self, names: Iterable[str] = DEFAULT, weights_mode: WeightsMode = "pretrained",
                 device: str | torch.device = "cpu") -> None:
        self.names = list(names)
        self.mode = check_mode(weights_mode)
        self.device = torch.device(device)
        self.fns = {n: METRICS.get(n).build(self.mode) for n in self.names}
        for n in ("lpips", "dists"):
            net = getattr(self.fns.get(n), "__closure__", None)
            if net:
                for cell in net:
                    if isinstance(cell.cell_contents, torch.nn.Module):
                        cell.cell_contents.to(self.device)
        self.reset()

    def reset(self) -> None:
        self.sums = {n: 0.0 for n in self.names}
        self.count = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = pred.to(self.device).float().clamp(0, 1)
        target = target.to(self.device).float().clamp(0, 1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        for n, fn in self.fns.items():
            self.sums[n] += float(fn(pred, target).sum())
        self.count += pred.shape[0]

    def result(self) -> dict:
        out = {n: (self.sums[n] / self.count if self.count else math.nan) for n in self.names}
        out["n_images"] = self.count
        if any(METRICS.get(n).needs_weights for n in self.names):
            out["lpips_weights"] = self.mode
        return out


def compute(pred: torch.Tensor, target: torch.Tensor, names: Iterable[str] = DEFAULT,
            weights_mode: WeightsMode = "pretrained") -> dict:
    ev = Evaluator(names, weights_mode)
    ev.update(pred, target)
    return ev.result()


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, spec, dataset, weights_mode: WeightsMode = "pretrained",
                   device: str | torch.device = "cpu", names: Iterable[str] = DEFAULT,
                   evaluator: Evaluator | None = None) -> dict:
    """Mean metrics of ``model`` over a dataset whose items hold ``input`` and ``paired_target``."""
    ev = evaluator or Evaluator(names, weights_mode, device)
    ev.reset()
    model.eval()
    for i in range(len(dataset)):
        item = dataset[i]
        if "paired_target" not in item:
            continue
        x = item["input"][None].to(device)
        ev.update(model(x).clamp(0, 1), item["paired_target"][None])
    return ev.result()
