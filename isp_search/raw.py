"""The RAW layer: CFA patterns, (B, Gb, R, Gr) packing, RMFA three-plane split and named normalisation presets.

Packed order follows PyNET/MAI (the published weights depend on it). For an RGGB mosaic the planes are
``raw[1::2,1::2], raw[0::2,1::2], raw[0::2,0::2], raw[1::2,0::2]``: blue, the green on the red row (called Gb in
the reference code), red, the green on the blue row (Gr). Other patterns keep the same roles: channel 1 is always
the green sharing a row with red.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from isp_search.registry import Registry

RAW_MAX = 1023  # RAW files hold 10-bit values in 16-bit PNGs


class CFA(enum.Enum):
    """Bayer pattern named by its top-left 2x2 block, read row by row."""

    RGGB = "RGGB"
    BGGR = "BGGR"
    GRBG = "GRBG"
    GBRG = "GBRG"

    @property
    def red(self) -> tuple[int, int]:
        """(row, col) of the red sample inside the 2x2 block."""
        i = self.value.index("R")
        return divmod(i, 2)

    @property
    def offsets(self) -> tuple[tuple[int, int], ...]:
        """(row, col) of the B, Gb (green on the red row), R and Gr samples: the packed channel order."""
        ry, rx = self.red
        by, bx = 1 - ry, 1 - rx
        return ((by, bx), (ry, bx), (ry, rx), (by, rx))

    @classmethod
    def from_red(cls, ry: int, rx: int) -> "CFA":
        return {(0, 0): cls.RGGB, (1, 1): cls.BGGR, (0, 1): cls.GRBG, (1, 0): cls.GBRG}[(ry, rx)]


def _check_mosaic(raw: torch.Tensor) -> None:
    if raw.dim() < 2:
        raise ValueError(f"expected a mosaic of shape (..., H, W), got {tuple(raw.shape)}")
    h, w = raw.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"mosaic sides must be even, got {h}x{w}")


def to_packed(raw: torch.Tensor, cfa: CFA = CFA.RGGB) -> torch.Tensor:
    """(..., H, W) mosaic -> (..., 4, H/2, W/2) planes in (B, Gb, R, Gr) order."""
    _check_mosaic(raw)
    return torch.stack([raw[..., y::2, x::2] for y, x in cfa.offsets], dim=-3)


def from_packed(packed: torch.Tensor, cfa: CFA = CFA.RGGB) -> torch.Tensor:
    """Inverse of :func:`to_packed`: (..., 4, h, w) -> (..., 2h, 2w) mosaic."""
    if packed.dim() < 3 or packed.shape[-3] != 4:
        raise ValueError(f"expected packed planes of shape (..., 4, h, w), got {tuple(packed.shape)}")
    h, w = packed.shape[-2:]
    out = packed.new_zeros(*packed.shape[:-3], 2 * h, 2 * w)
    for c, (y, x) in enumerate(cfa.offsets):
        out[..., y::2, x::2] = packed[..., c, :, :]
    return out


def to_planes(raw: torch.Tensor, cfa: CFA = CFA.RGGB, fill: float = 1.0) -> torch.Tensor:
    """(..., H, W) mosaic -> (..., 3, H, W) R, G, B planes keeping their CFA samples; other pixels = ``fill``.

    This is RMFA-Net's full-resolution input.
    """
    _check_mosaic(raw)
    planes = raw.new_full((*raw.shape[:-2], 3, *raw.shape[-2:]), fill)
    (by, bx), (g1y, g1x), (ry, rx), (g2y, g2x) = cfa.offsets
    planes[..., 0, ry::2, rx::2] = raw[..., ry::2, rx::2]
    planes[..., 1, g1y::2, g1x::2] = raw[..., g1y::2, g1x::2]
    planes[..., 1, g2y::2, g2x::2] = raw[..., g2y::2, g2x::2]
    planes[..., 2, by::2, bx::2] = raw[..., by::2, bx::2]
    return planes


def from_planes(planes: torch.Tensor, cfa: CFA = CFA.RGGB) -> torch.Tensor:
    """Inverse of :func:`to_planes`: picks each CFA sample back out of its plane."""
    if planes.dim() < 3 or planes.shape[-3] != 3:
        raise ValueError(f"expected planes of shape (..., 3, H, W), got {tuple(planes.shape)}")
    raw = planes.new_zeros(*planes.shape[:-3], *planes.shape[-2:])
    (by, bx), (g1y, g1x), (ry, rx), (g2y, g2x) = cfa.offsets
    raw[..., ry::2, rx::2] = planes[..., 0, ry::2, rx::2]
    raw[..., g1y::2, g1x::2] = planes[..., 1, g1y::2, g1x::2]
    raw[..., g2y::2, g2x::2] = planes[..., 1, g2y::2, g2x::2]
    raw[..., by::2, bx::2] = planes[..., 2, by::2, bx::2]
    return raw


@dataclass(frozen=True)
class Preset:
    """How raw 10-bit values become network input: ``(x - black) / (white - black)``, optionally clamped at 0.

    ``black`` holds one level per packed channel (B, Gb, R, Gr); a mosaic uses each channel's level at its sites.
    """

    name: str
    black: tuple[float, float, float, float]
    white: float
    clamp: bool
    per_channel_denominator: bool  # paper: (x - bl_c)/(1023 - bl_c); rmfa: (x - 63)/1023

    def _levels(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        black = torch.tensor(self.black, dtype=like.dtype, device=like.device)
        denom = (self.white - black) if self.per_channel_denominator else torch.full_like(black, self.white)
        return black, denom

    def normalize_packed(self, packed: torch.Tensor) -> torch.Tensor:
        """Raw values (..., 4, h, w) -> network input."""
        black, denom = self._levels(packed)
        x = packed - black[:, None, None]
        if self.clamp:
            x = x.clamp_min(0)
        return x / denom[:, None, None]

    def denormalize_packed(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_packed` (exact where no clamping happened)."""
        black, denom = self._levels(x)
        return x * denom[:, None, None] + black[:, None, None]

    def normalize_mosaic(self, raw: torch.Tensor, cfa: CFA = CFA.RGGB) -> torch.Tensor:
        """Raw values (..., H, W) -> normalised mosaic, each site with its own channel's levels."""
        return from_packed(self.normalize_packed(to_packed(raw, cfa)), cfa)


PRESETS: Registry[Preset] = Registry("normalisation preset")
PRESETS.add("paper", Preset("paper", (62.0, 60.0, 58.0, 61.0), RAW_MAX, clamp=False, per_channel_denominator=True))
PRESETS.add("pynet", Preset("pynet", (0.0, 0.0, 0.0, 0.0), 1020.0, clamp=False, per_channel_denominator=False))
PRESETS.add("rmfa", Preset("rmfa", (63.0, 63.0, 63.0, 63.0), RAW_MAX, clamp=True, per_channel_denominator=False))


def get_preset(name: str) -> Preset:
    return PRESETS.get(name)
