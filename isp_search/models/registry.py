"""The generator registry: each backbone declares its input layout and default normalisation preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from isp_search.raw import CFA, get_preset, to_packed, to_planes
from isp_search.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs from the RAW layer.

    ``input_layout`` is ``packed`` (4 x H/2 x W/2, output 2x) or ``planes`` (3 x H x W full resolution).
    """

    name: str
    build: Callable[..., nn.Module]
    input_layout: str
    preset: str
    params: int

    def prepare_input(self, raw: torch.Tensor, preset: str | None = None, cfa: CFA = CFA.RGGB) -> torch.Tensor:
        """Raw 10-bit mosaic values (..., H, W) -> this backbone's normalised input."""
        p = get_preset(preset or self.preset)
        raw = raw.float()
        if self.input_layout == "packed":
            return p.normalize_packed(to_packed(raw, cfa))
        return to_planes(p.normalize_mosaic(raw, cfa), cfa, fill=1.0)


GENERATORS: Registry[BackboneSpec] = Registry("generator backbone")


def register_backbone(name: str, *, input_layout: str, preset: str, params: int):
    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        GENERATORS.add(name, BackboneSpec(name, build, input_layout, preset, params))
        return build

    return deco


def spec_for(name: str) -> BackboneSpec:
    return GENERATORS.get(name)


def create_generator(name: str, **kwargs) -> nn.Module:
    """Build a randomly initialised backbone by its registered name."""
    return GENERATORS.get(name).build(**kwargs)
