"""Dead-leaves scenes: the texture model of ISO 19567-2 (Cao, Guichard & Hornung 2010), in colour.

Opaque discs ("leaves") fall on the image one over another until it is covered. Radii follow the power law
p(r) ∝ r^-3 between ``r_min`` and ``r_max``: the model is then scale invariant, with the 1/f² power spectrum and the
occlusion edges of natural images, which is why ISO 19567-2 measures texture loss on it. Centres are uniform over
the image grown by ``r_max`` on each side, so discs cut by the border are as frequent as inside. Each disc's colour
is one pixel drawn at random from a palette (here: the training photos), so the scenes carry those photos' colour
distribution. Discs are drawn at ``supersample`` x and area-averaged down: edges are anti-aliased as a lens would
blur them, not stair-stepped. Same generator state, same image (no other randomness; OpenCV rasterises exactly).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SHIFT = 4  # cv2 fixed-point bits for sub-pixel centres and radii


def leaf_radii(n: int, r_min: float, r_max: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` radii with density ∝ r^-3 on [r_min, r_max] (inverse-CDF sampling)."""
    u = rng.random(n)
    return (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5


def leaves_to_cover(size: int, r_min: float, r_max: float, uncovered: float = 0.05) -> int:
    """How many leaves leave about ``uncovered`` pixels of a ``size``² image bare on average.

    A pixel is missed by one leaf with probability 1 − E[πr²]/B, B the area centres are drawn from, so n leaves
    leave size² · exp(−n E[πr²] / B) pixels bare; E[r²] = 2 ln(r_max/r_min) / (r_min^-2 − r_max^-2) for r^-3.
    """
    mean_area = math.pi * 2.0 * math.log(r_max / r_min) / (r_min ** -2 - r_max ** -2)
    b = (size + 2.0 * r_max) ** 2
    return math.ceil(b / mean_area * math.log(size * size / uncovered))


def dead_leaves(size: int, palette: np.ndarray, rng: np.random.Generator, r_min: float = 1.0,
                r_max: float | None = None, supersample: int = 2) -> np.ndarray:
    """A ``size`` x ``size`` colour dead-leaves image, float64 RGB in [0, 1].

    ``palette`` is (N, 3) RGB in [0, 1]; each leaf takes one row at random. ``r_min``/``r_max`` are in output
    pixels (default ``r_max``: size / 2). The last leaf drawn is the front one; the canvas starts as one leaf
    behind all others, which is what the few pixels no disc reaches (about 0.05 per image) show.
    """
    palette = np.asarray(palette, np.float64).reshape(-1, 3)
    if size <= 0 or len(palette) == 0:
        raise ValueError(f"dead_leaves needs size > 0 and a non-empty palette, got size {size}, {len(palette)} colours")
    r_max = size / 2.0 if r_max is None else float(r_max)
    if not 0 < r_min < r_max:
        raise ValueError(f"dead_leaves needs 0 < r_min < r_max, got {r_min}, {r_max}")
    s = supersample
    n = leaves_to_cover(size, r_min, r_max)
    radii = leaf_radii(n, r_min, r_max, rng) * s
    centres = rng.uniform(-r_max * s, (size + r_max) * s, size=(n, 2))
    colours = np.rint(palette[rng.integers(len(palette), size=n + 1)] * 255.0)
    # Only leaves that touch the canvas are drawn (the others are hidden by construction): about a third of n.
    side = size * s
    touch = np.all((centres + radii[:, None] > 0) & (centres - radii[:, None] < side), axis=1)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = colours[-1]
    scale = 1 << SHIFT
    for (cx, cy), r, c in zip(np.rint(centres[touch] * scale).astype(np.int64),
                              np.rint(radii[touch] * scale).astype(np.int64), colours[:-1][touch]):
        cv2.circle(canvas, (int(cx), int(cy)), int(r), (int(c[0]), int(c[1]), int(c[2])), -1, cv2.LINE_8, SHIFT)
    if s > 1:
        canvas = cv2.resize(canvas.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return np.asarray(canvas, np.float64) / 255.0
