"""Loss functions (docs/method.md §4, paper §3.1–3.6) as pure functions, and the ``LOSSES`` registry of
generator terms.

A generator term names the frozen-network *branch* it reads (``None`` for pixel losses). Terms that share a branch
share one forward of that network per step (see :mod:`isp_search.train.step`), and DLA backpropagates each branch
once (see :mod:`isp_search.train.dla`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from isp_search.registry import Registry


def dped_kernel(size: int = 21, nsig: float = 3.0) -> torch.Tensor:
    """DPED's colour-loss Gaussian: 1-D bins of the normal CDF over ±nsig, 2-D = sqrt(outer), normalised to sum 1."""
    interval = (2 * nsig + 1.0) / size
    edges = torch.linspace(-nsig - interval / 2, nsig + interval / 2, size + 1, dtype=torch.float64)
    k1 = torch.diff(torch.special.ndtr(edges))
    k2 = torch.sqrt(torch.outer(k1, k1))
    return (k2 / k2.sum()).float()


def blur(rgb: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise blur with the DPED kernel, zero padding ('same' size, as DPED's TensorFlow conv)."""
    k = dped_kernel() if kernel is None else kernel
    c = rgb.shape[1]
    w = k.to(rgb.device, rgb.dtype).expand(c, 1, *k.shape).contiguous()
    return F.conv2d(rgb, w, padding=k.shape[-1] // 2, groups=c)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean((a - b) ** 2)


def tv_loss(y: torch.Tensor) -> torch.Tensor:
    """mean((dx)²) + mean((dy)²) over the batch (paper Eq. 9)."""
    return torch.mean((y[..., :, 1:] - y[..., :, :-1]) ** 2) + torch.mean((y[..., 1:, :] - y[..., :-1, :]) ** 2)


def color_loss(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DPED colour loss: MSE between blurred images."""
    return mse(blur(y), blur(target))


def lab_lightness3(rgb: torch.Tensor) -> torch.Tensor:
    """CIE LAB L channel / 100 replicated to 3 channels (the content input for unpaired training and pretraining)."""
    lum = kornia.color.rgb_to_lab(rgb.float())[:, :1] / 100.0
    return lum.expand(-1, 3, -1, -1)


def grayscale(rgb: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(rgb)


def relativistic_g(d_fake: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """Generator: E[softplus(-(D(fake) - D(real)))] (R3GAN)."""
    return F.softplus(-(d_fake - d_real)).mean()


def relativistic_d(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator: E[softplus(-(D(real) - D(fake)))] (R3GAN)."""
    return F.softplus(-(d_real - d_fake)).mean()


def zero_centered_penalty(d_out: torch.Tensor, x: torch.Tensor, gamma: float) -> torch.Tensor:
    """(gamma/2)·E‖∇ₓD(x)‖² on the discriminator input ``x`` (R1 on real, R2 on fake); differentiable in D."""
    (grad,) = torch.autograd.grad(d_out.sum(), x, create_graph=True)
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(1).mean()


def discriminator_loss(disc: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor,
                       gamma: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Relativistic D loss + R1 + R2 on detached feature tensors; returns the loss and its named parts."""
    # Non-leaf views of the detached features: the penalty differentiates to them (a leaf would also work, but
    # torch's FLOP counter, used by bench-train, cannot hook autograd.grad on leaves).
    real = real.detach().float().requires_grad_(gamma > 0).view_as(real)
    fake = fake.detach().float().requires_grad_(gamma > 0).view_as(fake)
    d_real, d_fake = disc(real), disc(fake)
    adv = relativistic_d(d_real, d_fake)
    r1 = zero_centered_penalty(d_real, real, gamma) if gamma > 0 else adv.new_zeros(())
    r2 = zero_centered_penalty(d_fake, fake, gamma) if gamma > 0 else adv.new_zeros(())
    parts = {k: float(v.detach().mean()) for k, v in
             (("real", d_real), ("fake", d_fake), ("adv", adv), ("r1", r1), ("r2", r2))}
    return adv + r1 + r2, parts


@dataclass(frozen=True)
class TermSpec:
    """A generator loss term: the frozen branch it reads (None: pixels only) and, for adversarial terms, the
    discriminator and which branch output it judges."""

    name: str
    branch: str | None
    disc: str | None = None  # discriminator registry name
    output: int | None = None  # index into the branch's output tuple
    group: str | None = None  # optimiser group of the discriminator (color | texture)


LOSSES: Registry[TermSpec] = Registry("loss term")
for _t in (
    TermSpec("content", "content"),  # VGG relu5_4: RGB (paired modes) or LAB L (pretrain, unpaired)
    TermSpec("mse", None),
    TermSpec("tv", None),
    TermSpec("color", None),
    TermSpec("lpips", "lpips"),
    TermSpec("dists", "dists"),
    TermSpec("adv_color", "vit", "vit_color_mlp", None, "color"),
    TermSpec("adv_relu1", "alex_gray", "texture_cnn", 0, "texture"),
    TermSpec("adv_relu4", "alex_gray", "texture_cnn", 1, "texture"),
):
    LOSSES.add(_t.name, _t)


def is_finite(x: torch.Tensor | float) -> bool:
    return math.isfinite(float(x))
