"""RMFA-Net tiny: full-resolution three-plane input, two residual multi-frequency attention blocks (29,223 params)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isp_search.models.registry import register_backbone


def _conv_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU())


class TextureModule(nn.Module):
    """High-frequency (1x1) and low-frequency (3x3) branches, concatenated."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.high_freq = _conv_relu(width, width // 2, 1)
        self.low_freq = _conv_relu(width, width // 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.high_freq(x), self.low_freq(x)], dim=1)


class ToneMapping(nn.Module):
    """Three-level illumination estimate; returns the input minus the illumination (Retinex-style reflectance)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.level1 = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.level2 = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.level3 = _conv_relu(width, width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l1 = self.level1(x)
        l3 = self.level3(self.level2(l1))
        up = _upsample_to(l3, l1) + l1
        return x - _upsample_to(up, x)


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 when the sizes allow it (a constant-scale Resize exports cleanly to TFLite), else to size."""
    h, w = like.shape[-2:]
    if (2 * x.shape[-2], 2 * x.shape[-1]) == (h, w):
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


class ChannelAttention(nn.Module):
    def __init__(self, width: int, reduced: int = 1) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(width, reduced, 1, bias=False), nn.ReLU(), nn.Conv2d(reduced, width, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc(x.mean(dim=(2, 3), keepdim=True))
        mx = self.fc(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    def __init__(self, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class RMFABlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.texture_module = TextureModule(width)
        self.tone_mapping = ToneMapping(width)
        self.fusion = _conv_relu(2 * width, width, 3)
        self.channel_attention = ChannelAttention(width)
        self.spatial_attention = SpatialAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fusion(torch.cat([self.texture_module(x), self.tone_mapping(x)], dim=1))
        y = self.spatial_attention(self.channel_attention(y))
        return x + y


class RMFANet(nn.Module):
    """Input (B, 3, H, W) planes (preset ``rmfa``, missing sites = 1.0); output (B, 3, H, W) in [0, 1]."""

    def __init__(self, width: int = 16, blocks: int = 2) -> None:
        super().__init__()
        self.input_module = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1), nn.Tanh()
        )
        self.rmfa_blocks = nn.Sequential(*[RMFABlock(width) for _ in range(blocks)])
        self.output_module = nn.Sequential(nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_module(self.rmfa_blocks(self.input_module(x)))


@register_backbone("rmfa_tiny", input_layout="planes", preset="rmfa", params=29223)
def rmfa_tiny() -> RMFANet:
    """RMFA-Net tiny: width 16, two blocks (29,223 parameters)."""
    return RMFANet(width=16, blocks=2)
