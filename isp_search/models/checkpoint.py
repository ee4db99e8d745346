"""Generator checkpoints: ours carry their backbone and preset; the paper's are bare CUDA-saved state dicts.

Our format is a dict ``{"format": "isp-search/generator/v1", "arch", "preset", "state_dict", ...extra}``. A
training checkpoint (``checkpoints/last.pt``) stores the same keys at top level plus optimiser state, so both load
here. A run folder resolves to ``checkpoints/best.pt`` (else ``last.pt``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from isp_search.errors import UserError
from isp_search.models.registry import GENERATORS, BackboneSpec, create_generator, spec_for

FORMAT = "isp-search/generator/v1"


@dataclass
class LoadedGenerator:
    model: nn.Module
    spec: BackboneSpec
    preset: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (-> checkpoints/best.pt, else checkpoints/last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise UserError(f"{p}: a run folder needs checkpoints/best.pt or checkpoints/last.pt; found neither")
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint file or run folder")
    return p


def save_generator(path: str | os.PathLike, model: nn.Module, arch: str, preset: str, **extra: Any) -> Path:
    """Write an isp-search generator checkpoint atomically (temp file + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"format": FORMAT, "arch": arch, "preset": preset, "state_dict": state, **extra}, tmp)
    os.replace(tmp, p)
    return p


def _read(p: Path) -> Any:
    """Tensors and plain containers only (``weights_only``): a downloaded file cannot run code when loaded.

    Our training checkpoints hold numpy RNG states, whose types are allow-listed here.
    """

    safe = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("uint32")), np.random.__dict__.get("MT19937")]
    try:
        with torch.serialization.safe_globals([g for g in safe if g is not None]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, not a torch file, or holding objects beyond tensors and containers
        raise UserError(f"{p}: not a readable PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def _guess_arch(state: dict[str, torch.Tensor]) -> str | None:
    """Name the registered backbone whose state-dict keys and shapes equal ``state``, if exactly one does."""
    hits = []
    for name in GENERATORS.names():
        ref = create_generator(name).state_dict()
        if ref.keys() == state.keys() and all(ref[k].shape == state[k].shape for k in ref):
            hits.append(name)
    return hits[0] if len(hits) == 1 else None


def load_generator(
    path: str | os.PathLike, arch: str | None = None, preset: str | None = None, device: str | torch.device = "cpu"
) -> LoadedGenerator:
    """Load our checkpoint (or run folder) or a paper-format ``state_dict``; reject a mismatch with a clear error.

    ``arch``/``preset`` override what the file carries; a bare state dict needs ``arch`` unless its keys and
    shapes identify exactly one backbone.
    """
    p = resolve_checkpoint_path(path)
    obj = _read(p)
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k not in ("state_dict",) and not k.startswith("optim")}
        file_arch = obj.get("arch")
        if arch and file_arch and arch != file_arch:
            raise UserError(f"{p}: checkpoint holds a {file_arch!r} generator, but --arch {arch!r} was given")
        arch = arch or file_arch
        preset = preset or obj.get("preset")
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
        if arch is None:
            arch = _guess_arch(state)
            if arch is None:
                raise UserError(
                    f"{p}: a bare state_dict names no backbone; pass --arch (valid: {', '.join(GENERATORS.names())})"
                )
    else:
        raise UserError(f"{p}: neither an isp-search checkpoint nor a state_dict of tensors")
    spec = spec_for(arch)
    model = spec.build()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{p}: state_dict does not fit {arch!r}: missing {missing[:4]}{'…' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'…' if len(unexpected) > 4 else ''}"
        )
    bad = [k for k in expected if expected[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise UserError(
            f"{p}: state_dict does not fit {arch!r}: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(expected[k].shape)}"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.to(device).eval()
    return LoadedGenerator(model, spec, preset or spec.preset, p, meta)
