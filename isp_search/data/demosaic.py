"""Demosaicers (a registry) and the reference "look" that turns a demosaiced RAW into the content reference.

Every demosaicer maps an RGGB mosaic (H, W) of raw values to float32 (H, W, 3) in the same units. The look is a
separate step (docs/method.md §4.2; defaults from the authors' code): divide by ``divisor``, multiply by
per-channel ``gains``, clip to [0, 1], stretch each image's min..max to 0..1, apply gamma 1/2.2 and resize to the
output size.

Note: the authors' code (docs/method.md §4.2) divides the 10-bit values by 65535 (not 1023), so after the gains
every value is far below 1 and the clip never bites; the per-image min-max stretch then sets the brightness. The
default keeps that fact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import cv2
import numpy as np

from isp_search.registry import Registry

Demosaicer = Callable[[np.ndarray], np.ndarray]
DEMOSAICERS: Registry[Demosaicer] = Registry("demosaicer")


def _colour_demosaicing():
    """colour-demosaicing, loaded on first use: it loads ``colour`` (1-2 s), which a trial reading the reference
    caches never needs."""
    # deferred: colour (1-2 s at import) is needed only where a cache is built or a RAW demosaiced on the fly
    import colour_demosaicing

    return colour_demosaicing


def _as_float(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] % 2 or raw.shape[1] % 2:
        raise ValueError(f"expected an (H, W) mosaic with even sides, got {raw.shape}")
    return raw.astype(np.float64)


@DEMOSAICERS.register("menon2007")
def menon2007(raw: np.ndarray) -> np.ndarray:
    """Menon et al. 2007 (DDFAPD with refining step), the authors' reference demosaicer (docs/method.md §4.2)."""
    return _colour_demosaicing().demosaicing_CFA_Bayer_Menon2007(_as_float(raw), "RGGB").astype(np.float32)


@DEMOSAICERS.register("malvar2004")
def malvar2004(raw: np.ndarray) -> np.ndarray:
    """Malvar, He and Cutler 2004 gradient-corrected linear interpolation."""
    return _colour_demosaicing().demosaicing_CFA_Bayer_Malvar2004(_as_float(raw), "RGGB").astype(np.float32)


@DEMOSAICERS.register("bilinear")
def bilinear(raw: np.ndarray) -> np.ndarray:
    """Bilinear interpolation (colour-demosaicing)."""
    return _colour_demosaicing().demosaicing_CFA_Bayer_bilinear(_as_float(raw), "RGGB").astype(np.float32)


# OpenCV names a Bayer pattern by the 2x2 block starting at the second row and second column, so an RGGB
# sensor (R at (0, 0)) is its "BG" pattern; tests/test_demosaic.py checks this on a synthetic image.
def _opencv(raw: np.ndarray, code: int, bits: int) -> np.ndarray:
    x = _as_float(raw)
    top = 65535.0 if bits == 16 else 255.0
    # Scale into the integer range OpenCV needs (linear, so undone exactly afterwards except rounding).
    span = 1023.0 if x.max(initial=0.0) <= 1023.0 else 65535.0
    scale = top / span
    ints = np.clip(np.rint(x * scale), 0, top).astype(np.uint16 if bits == 16 else np.uint8)
    return (cv2.cvtColor(ints, code).astype(np.float32) / np.float32(scale)).astype(np.float32)


@DEMOSAICERS.register("opencv_bilinear")
def opencv_bilinear(raw: np.ndarray) -> np.ndarray:
    """OpenCV bilinear (``COLOR_BayerBG2RGB``, the paper's Table 3 "BG2RGB"), on 16-bit values."""
    return _opencv(raw, cv2.COLOR_BayerBG2RGB, 16)


@DEMOSAICERS.register("opencv_ea")
def opencv_ea(raw: np.ndarray) -> np.ndarray:
    """OpenCV edge-aware demosaicing (``COLOR_BayerBG2RGB_EA``), on 16-bit values."""
    return _opencv(raw, cv2.COLOR_BayerBG2RGB_EA, 16)


@DEMOSAICERS.register("opencv_vng")
def opencv_vng(raw: np.ndarray) -> np.ndarray:
    """OpenCV variable number of gradients (``COLOR_BayerBG2RGB_VNG``); OpenCV supports it on 8-bit input only,
    so the values are quantised to 8 bits first."""
    return _opencv(raw, cv2.COLOR_BayerBG2RGB_VNG, 8)


def demosaic(raw: np.ndarray, name: str = "menon2007") -> np.ndarray:
    """Demosaic an RGGB mosaic (H, W) of raw values with the named demosaicer -> float32 (H, W, 3), same units."""
    return DEMOSAICERS.get(name)(raw)


@dataclass(frozen=True)
class ReferenceLook:
    """How a demosaiced RAW becomes the content reference (defaults = the authors' code, docs/method.md §4.2)."""

    gains: tuple[float, float, float] = (1.6, 1.2, 1.4)
    """Per-channel (R, G, B) multipliers applied after dividing by ``divisor``."""
    divisor: float = 65535.0
    """The authors' code divides 10-bit values by 65535 (not 1023); kept as the default so references match it."""
    stretch: bool = True
    """Per-image min-max stretch to [0, 1] after the clip."""
    gamma: float = 2.2
    """Output = x ** (1 / gamma)."""

    def apply(self, rgb: np.ndarray, out_size: tuple[int, int] | None = None) -> np.ndarray:
        """Linear demosaiced values (H, W, 3) -> reference float32 (H', W', 3) in [0, 1]."""
        x = rgb.astype(np.float32) / np.float32(self.divisor)
        x = np.clip(x * np.asarray(self.gains, np.float32), 0.0, 1.0)
        if self.stretch:
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        x = np.power(x, np.float32(1.0 / self.gamma))
        if out_size is not None and tuple(out_size) != x.shape[:2]:
            h, w = out_size
            interp = cv2.INTER_AREA if h < x.shape[0] else cv2.INTER_LINEAR
            x = np.clip(cv2.resize(x, (w, h), interpolation=interp), 0.0, 1.0)
        return x.astype(np.float32)

    def key(self) -> dict:
        """The parameters that make two references equal (used in the cache key)."""
        return asdict(self)


def demosaic_reference(
    raw: np.ndarray,
    demosaicer: str = "menon2007",
    look: ReferenceLook = ReferenceLook(),
    out_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The demosaiced content reference of one RAW mosaic: float32 (H, W, 3) in [0, 1] (``out_size`` if given)."""
    return look.apply(demosaic(raw, demosaicer), out_size)
