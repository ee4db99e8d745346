"""Run-folder plumbing: the seeded batch order, RNG capture, training checkpoints and atomic JSON.

A training checkpoint (``last.pt``) is a generator checkpoint (``isp_search.models.checkpoint`` format: top-level
``format``, ``arch``, ``preset``, ``state_dict``) plus ``optim_state`` (optimisers, discriminators, step, data
position, RNGs, best score) — ``load_generator`` skips keys starting with ``optim``, so predict/eval/export read it
as is. ``best.pt`` is the generator alone (what export needs; resume never reads it), so a reported checkpoint
folder holds the resume state once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isp_search.errors import UserError
from isp_search.hashing import file_sha256
from isp_search.models.checkpoint import resolve_checkpoint_path, save_generator


class BatchOrder:
    """Seeded epoch permutations of ``n`` items cut into full batches; the (epoch, position) pair is the state."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.epoch, self.pos = 0, 0

    def batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        b = self.batch_size
        return [perm[i : i + b] for i in range(0, self.n - b + 1, b)]

    def remaining(self) -> list[list[int]]:
        return self.batches(self.epoch)[self.pos :]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: Path, gen: torch.nn.Module, arch: str, preset: str, step: int,
                             optim_state: dict[str, Any], **extra: Any) -> Path:
    """Atomic write of the generator plus everything needed to resume exactly."""
    return save_generator(path, gen, arch, preset, step=step, optim_state=optim_state, **extra)


def save_best_generator(path: Path, gen: torch.nn.Module, arch: str, preset: str, step: int, **extra: Any) -> Path:
    """Atomic write of the generator alone (no optimiser or discriminator state): the export/predict file."""
    return save_generator(path, gen, arch, preset, step=step, **extra)


def checkpoint_sha256(init_from: str | None) -> str | None:
    """sha256 of the checkpoint file ``init_from`` resolves to (run.json records what a run started from)."""
    if not init_from or "://" in init_from:
        return None

    return file_sha256(resolve_checkpoint_path(init_from))


def resolve_resume(path: str | os.PathLike) -> Path:
    """A ``last.pt``, a folder holding it (a reported checkpoint folder) or a run folder."""
    p = Path(path)
    for cand in (p, p / "last.pt", p / "checkpoints" / "last.pt"):
        if cand.is_file():
            return cand
    raise UserError(f"--resume {p}: no last.pt there (expected a run folder, its checkpoints/ folder or a .pt file)")


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    p = resolve_resume(path)
    obj = torch.load(p, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict) or "optim_state" not in obj:
        raise UserError(f"{p}: not a training checkpoint (no optimiser state); use model.init_from to start from it")
    return obj


def copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def truncate_log(path: Path, step: int) -> int:
    """Keep the rows of a ``metrics.jsonl`` up to ``step`` (a run resumed from its step-``step`` checkpoint writes
    the later ones again; -1: a fresh start keeps none); returns how many were dropped. A torn line (a kill
    mid-write) is dropped too."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{ln}\n" for ln in kept))
        os.replace(tmp, path)
    return dropped
