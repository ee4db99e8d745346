"""Pairing modes (a registry): which RGB photo is the training target of each RAW sample.

- ``paired``: each RAW with its own scene's RGB (needs a paired split).
- ``shuffled``: every RAW gets an independently drawn RGB of the split, re-drawn each epoch from (seed, epoch).
  Same scenes, no correspondence: what the authors' code did once, unseeded (docs/method.md §2, §14).
- ``disjoint``: the ids are split once (seeded) into two halves; RAW samples come from one half and targets from
  the other, re-drawn each epoch: no RAW ever meets its own scene, the honest unpaired setting.

On an unpaired split (``folder`` train) RAW and RGB are already independent, so ``shuffled`` and ``disjoint``
both draw targets from the whole RGB folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from isp_search.errors import UserError
from isp_search.registry import Registry


@dataclass(frozen=True)
class Pairing:
    """``raw[k]`` is the sample index of item k; ``target[k]`` the index into the split's RGB pool."""

    raw: np.ndarray
    target: np.ndarray


PairingFn = Callable[[int, int, bool, int, int], Pairing]
PAIRINGS: Registry[PairingFn] = Registry("pairing mode")


def _rng(seed: int, epoch: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, salt])


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n targets from ``pool``: whole permutations, so each photo is used about equally often."""
    if len(pool) == 0:
        raise UserError("no RGB photos to draw unpaired targets from")
    reps = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


@PAIRINGS.register("paired")
def paired(n_samples: int, n_pool: int, is_paired: bool, seed: int, epoch: int) -> Pairing:
    if not is_paired:
        raise UserError("pairing 'paired' needs a split where every RAW has its RGB; use 'shuffled' or 'disjoint'")
    idx = np.arange(n_samples)
    return Pairing(idx, idx.copy())


@PAIRINGS.register("shuffled")
def shuffled(n_samples: int, n_pool: int, is_paired: bool, seed: int, epoch: int) -> Pairing:
    return Pairing(np.arange(n_samples), _draw(np.arange(n_pool), n_samples, _rng(seed, epoch, 1)))


@PAIRINGS.register("disjoint")
def disjoint(n_samples: int, n_pool: int, is_paired: bool, seed: int, epoch: int) -> Pairing:
    if not is_paired:
        return shuffled(n_samples, n_pool, is_paired, seed, epoch)
    if n_samples < 2:
        raise UserError(f"pairing 'disjoint' needs at least 2 samples, got {n_samples}")
    halves = np.random.default_rng([seed, 2]).permutation(n_samples)  # fixed for the whole run
    raw_half, rgb_half = np.sort(halves[: n_samples // 2]), np.sort(halves[n_samples // 2:])
    return Pairing(raw_half, _draw(rgb_half, len(raw_half), _rng(seed, epoch, 3)))


def make_pairing(mode: str, n_samples: int, n_pool: int, is_paired: bool, seed: int, epoch: int) -> Pairing:
    """The item -> (sample, target) assignment of ``mode`` for one epoch."""
    return PAIRINGS.get(mode)(n_samples, n_pool, is_paired, seed, epoch)
