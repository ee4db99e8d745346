"""Efficient ISP (MAI 2022 winner) and Robust ISP: three 3x3 convolutions and a x2 pixel shuffle on packed RAW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isp_search.models.registry import register_backbone


class ThreeConvISP(nn.Module):
    """conv1 -> tanh -> conv2 -> relu -> conv3 -> relu -> pixel shuffle x2. Keys match the published weights."""

    def __init__(self, widths: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = nn.Conv2d(4, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the pixel shuffle."""
        x = torch.tanh(self.conv1(x))
        x = F.relu(self.conv2(x))
        return F.relu(self.conv3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.features(x), 2)


@register_backbone("efficient_isp", input_layout="packed", preset="paper", params=3060)
def efficient_isp() -> ThreeConvISP:
    """Efficient ISP: widths 12, 12, 12 (3,060 parameters)."""
    return ThreeConvISP((12, 12, 12))


@register_backbone("robust_isp", input_layout="packed", preset="paper", params=1616)
def robust_isp() -> ThreeConvISP:
    """Robust ISP: widths 16, 4, 12 (1,616 parameters)."""
    return ThreeConvISP((16, 4, 12))
