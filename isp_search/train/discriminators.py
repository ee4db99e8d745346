"""Discriminators (a registry), each built in full from its input feature shape before any optimiser exists.

The authors' code created the texture CNN's first FC lazily after its optimiser, so that layer was never trained
(docs/method.md §14); here every layer is sized from the feature shape (which follows from the patch size) at
construction.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from isp_search.registry import Registry

# The last layer has no bias: the relativistic losses see only D(real) - D(fake) and R1/R2 only gradients, so an
# output bias would get zero gradient forever (a parameter that is never trained).
DISCRIMINATORS: Registry[Callable[[tuple[int, ...]], nn.Module]] = Registry("discriminator")


@DISCRIMINATORS.register("vit_color_mlp")
class ViTColorMLP(nn.Module):
    """Per-token MLP 768 -> 512 -> ReLU -> 512 -> ReLU -> 1 on ViT tokens (B, N, C), averaged over tokens."""

    def __init__(self, in_shape: tuple[int, ...], hidden: int = 512) -> None:
        super().__init__()
        dim = in_shape[-1]
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1, bias=False))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens).mean(dim=(1, 2))


@DISCRIMINATORS.register("texture_cnn")
class TextureCNN(nn.Module):
    """CNN on LPIPS AlexNet features (C, H, W): conv5x5/2→48, 3x3/2→128, 3x3→192, 3x3→192, 3x3/2→128 (LeakyReLU 0.2
    after each), flatten, FC→1024, LeakyReLU, FC→1. The FC input size is computed here from ``in_shape``."""

    def __init__(self, in_shape: tuple[int, ...], width: int = 1024) -> None:
        super().__init__()
        c = in_shape[0]
        layers: list[nn.Module] = []
        for cin, cout, k, s in ((c, 48, 5, 2), (48, 128, 3, 2), (128, 192, 3, 1), (192, 192, 3, 1), (192, 128, 3, 2)):
            layers += [nn.Conv2d(cin, cout, k, s, padding=k // 2), nn.LeakyReLU(0.2)]
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.convs(torch.zeros(1, *in_shape)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.LeakyReLU(0.2),
                                  nn.Linear(width, 1, bias=False))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(feats)).flatten()


def create_discriminator(name: str, in_shape: tuple[int, ...]) -> nn.Module:
    """Build a registered discriminator for features of shape ``in_shape`` (without the batch dimension)."""
    return DISCRIMINATORS.get(name)(tuple(in_shape))
