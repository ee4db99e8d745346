"""SSIM and MS-SSIM exactly as TensorFlow's ``tf.image.ssim`` / ``tf.image.ssim_multiscale`` compute them.

TF settings (the paper's evaluation): 11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03, 'valid' filtering,
population (co)variances; per-channel values averaged over the channels. MS-SSIM: 5 scales with weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling (odd sides padded symmetrically first), contrast-structure
terms of scales 1..n-1 and the full SSIM of scale n, each clipped at 0 per channel, then the weighted product.

Why not pyiqa's ``ssim``/``ms_ssim`` functions: they clip the contrast-structure map per pixel, average the
channels before the product and zero-pad odd sides, so they differ from TF (tests check ours against TF itself).

Small images: TF refuses MS-SSIM when the coarsest scale is smaller than the window (5 scales need sides >= 161 px:
161 -> 81 -> 41 -> 21 -> 11).
Here such images use the most scales whose coarsest level still holds the 11x11 window, with the first n weights
renormalised to sum to 1 (:func:`ms_ssim_scales`); the evaluator reports the count as ``ms_ssim_scales``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from isp_search.errors import UserError

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalised (size, size) Gaussian TF's ``_fspecial_gauss`` builds."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    w = g[:, None] * g[None, :]
    return (w / w.sum()).to(dtype=dtype, device=device)


def ssim_per_channel(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, contrast-structure), each (B, C): means over the valid region of each channel."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < WINDOW:
        raise UserError(f"SSIM needs images of at least {WINDOW}x{WINDOW} px, got {x.shape[-1]}x{x.shape[-2]}")
    c = x.shape[1]
    win = gaussian_window(dtype=x.dtype, device=x.device).expand(c, 1, WINDOW, WINDOW)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    num0, den0 = 2 * mx * my, mx**2 + my**2
    luminance = (num0 + c1) / (den0 + c1)
    cs = (2 * blur(x * y) - num0 + c2) / (blur(x * x + y * y) - den0 + c2)
    return (luminance * cs).mean((-2, -1)), cs.mean((-2, -1))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (B,), as ``tf.image.ssim``."""
    return ssim_per_channel(x, y, data_range)[0].mean(1)


def ms_ssim_scales(h: int, w: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many scales fit: the coarsest (sides halved, rounded up, n-1 times) must still hold the window."""
    if min(h, w) < WINDOW:
        raise UserError(f"MS-SSIM needs images of at least {WINDOW}x{WINDOW} px, got {w}x{h}")
    n, side = 1, min(h, w)
    while n < max_scales and math.ceil(side / 2) >= WINDOW:
        side, n = math.ceil(side / 2), n + 1
    return n


def _halve(t: torch.Tensor) -> torch.Tensor:
    pad_h, pad_w = t.shape[-2] % 2, t.shape[-1] % 2
    if pad_h or pad_w:  # TF pads odd sides at the end with the mirrored edge ('SYMMETRIC' = replicate by one)
        t = F.pad(t, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(t, 2)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image MS-SSIM (B,), as ``tf.image.ssim_multiscale`` (fewer scales for small images, see module doc)."""
    n = ms_ssim_scales(*x.shape[-2:])
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n], dtype=x.dtype, device=x.device)
    if n < len(MS_SSIM_WEIGHTS):  # TF's own 5 weights sum to 1.0001 and are used as they are
        weights = weights / weights.sum()
    terms = []
    for i in range(n):
        if i:
            x, y = _halve(x), _halve(y)
        s, cs = ssim_per_channel(x, y, data_range)
        terms.append((s if i == n - 1 else cs).clamp_min(0))
    per_channel = torch.prod(torch.stack(terms, -1) ** weights, -1)  # (B, C)
    return per_channel.mean(1)
