"""The frozen feature networks of the losses and discriminators (docs/method.md §4). All are eval-mode, no
trainable params.

Weights come from :mod:`isp_search.weights` (local files, or explicitly random with ``backbone_weights: random``).
Each module maps images in [0, 1] (B, 3, H, W) to features; input handling is part of the module.

``features.input`` (:data:`FEATURE_INPUTS`) picks what the discriminators' networks see. ``reference`` (default):
as the authors' code fed them, the grayscale [0, 1] image straight into the AlexNet trunk and the blurred [0, 1]
RGB straight into the ViT (plain bilinear resize to its size); the authors' gamma (our 1000) and learning rates
were tuned on these feature scales. ``normalized``: each network's own input normalisation (LPIPS's scaling layer;
the ViT's mean/std with an antialiased resize). The content VGG always takes torchvision's ImageNet normalisation
(docs/method.md §4.1, §4.7, §14).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from isp_search.weights import WeightsMode, load_alexnet, load_vgg19_features, load_vit_b16

FEATURE_INPUTS = ("reference", "normalized")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS v0.1 ScalingLayer constants (inputs in [-1, 1]), as pyiqa's LPIPS applies them before its AlexNet.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter (the authors' code left the ViT trainable; we do
    not: docs/method.md §14)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class _Frozen(nn.Module):
    def train(self, mode: bool = True) -> _Frozen:  # a frozen network stays in eval mode
        return super().train(False)


class VGGRelu54(_Frozen):
    """VGG-19 up to ``relu5_4`` (torchvision ``features[:36]``) on ImageNet-normalised RGB."""

    def __init__(self, mode: WeightsMode) -> None:
        super().__init__()
        self.net = freeze(load_vgg19_features(mode)[:36])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net((rgb - self.mean) / self.std)


class ViTTokens(_Frozen):
    """ViT-B/16 last hidden state (after the final norm) without the CLS token: (B, N, 768)."""

    def __init__(self, mode: WeightsMode, img_size: int = 224, inputs: str = "reference") -> None:
        super().__init__()
        self.net = freeze(load_vit_b16(mode, img_size))
        self.img_size = img_size
        self.normalized = _check_inputs(inputs) == "normalized"
        cfg = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.5,) * 3)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.5,) * 3)).view(1, 3, 1, 1))
        self.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.shape[-2:] != (self.img_size, self.img_size):
            rgb = F.interpolate(rgb, size=(self.img_size,) * 2, mode="bilinear", align_corners=False,
                                antialias=self.normalized)
        tokens = self.net.forward_features((rgb - self.mean) / self.std if self.normalized else rgb)
        return tokens[:, self.net.num_prefix_tokens:]


class LPIPSAlexTrunk(_Frozen):
    """The AlexNet trunk of LPIPS (pyiqa's slices) on grayscale: returns ``relu1`` (64 ch) and ``relu4`` (256 ch).

    AlexNet ``features[0:2]`` (relu1) -> ``[2:10]`` (relu4). ``inputs="reference"``: the [0, 1] grayscale goes in
    as it is (as the authors' code does, docs/method.md §4.7); ``"normalized"``: LPIPS's input scaling first,
    x -> 2x - 1 -> (x - shift) / scale.
    """

    def __init__(self, mode: WeightsMode, inputs: str = "reference") -> None:
        super().__init__()
        self.normalized = _check_inputs(inputs) == "normalized"
        feats = freeze(load_alexnet(mode)).features
        self.to_relu1 = feats[0:2]
        self.to_relu4 = feats[2:10]
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.eval()

    def forward(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = gray.expand(-1, 3, -1, -1) if gray.shape[1] == 1 else gray
        if self.normalized:
            x = ((2 * x - 1) - self.shift) / self.scale
        r1 = self.to_relu1(x)
        return r1, self.to_relu4(r1)


def _check_inputs(inputs: str) -> str:
    if inputs not in FEATURE_INPUTS:
        raise ValueError(f"features.input: {inputs!r} is not valid; valid: {', '.join(FEATURE_INPUTS)}")
    return inputs


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
