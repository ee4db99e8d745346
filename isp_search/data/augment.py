"""Flips and 90-degree rotations that keep the RGGB phase.

Flipping or rotating an RGGB mosaic with even sides gives another Bayer pattern (a horizontal flip makes GRBG).
After the op we find where red landed in the top-left 2x2 block and crop (H-2) x (W-2) starting there, so every
augmented sample is RGGB again and the same size whatever the op. The sample's reference and target get the very
same op and crop, so they stay aligned with the mosaic.
"""

from __future__ import annotations

import numpy as np

from isp_search.raw import CFA

# The 8 symmetries of the square: rotate k quarter turns (numpy's rot90 direction), then optionally flip columns.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for k in range(4) for f in (False, True))


def geometric_op(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the first two axes of ``a`` by k quarter turns, then mirror the columns if ``flip``."""
    out = np.rot90(a, k, axes=(0, 1))
    return out[:, ::-1] if flip else out


def cfa_after(k: int, flip: bool, cfa: CFA = CFA.RGGB) -> CFA:
    """The pattern of a mosaic with even sides after :func:`geometric_op`."""
    block = np.array(list(cfa.value)).reshape(2, 2)
    ry, rx = np.argwhere(geometric_op(block, k, flip) == "R")[0]
    return CFA.from_red(int(ry), int(rx))


def augment_sample(
    raw: np.ndarray, aligned: list[np.ndarray], k: int, flip: bool
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Apply the op to an RGGB mosaic (H, W) and to images aligned with it (H, W, ...), then re-align to RGGB.

    Returns contiguous arrays of (H-2) x (W-2) (sides swapped for odd k).
    """
    if raw.ndim != 2 or raw.shape[0] % 2 or raw.shape[1] % 2:
        raise ValueError(f"expected an (H, W) mosaic with even sides, got {raw.shape}")
    for a in aligned:
        if a.shape[:2] != raw.shape:
            raise ValueError(f"aligned image {a.shape} does not match the mosaic {raw.shape}")
    ry, rx = cfa_after(k, flip).red

    def op(a: np.ndarray) -> np.ndarray:
        t = geometric_op(a, k, flip)
        return np.ascontiguousarray(t[ry : ry + t.shape[0] - 2, rx : rx + t.shape[1] - 2])

    return op(raw), [op(a) for a in aligned]


def random_op(rng: np.random.Generator, square: bool) -> tuple[int, bool]:
    """A random symmetry; quarter turns only for square images so batch shapes stay equal."""
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    return k, bool(rng.integers(2))
