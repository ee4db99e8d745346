"""One place that finds every pretrained file; nothing is downloaded unless ``isp-search weights fetch`` is run.

Search order for a file: the ``--weights-dir`` of a command (:func:`set_weights_dir`, which sets
``$ISP_SEARCH_WEIGHTS`` so Ray workers and subprocesses inherit it), ``$TORCH_HOME/hub/checkpoints`` (torchvision's
own cache), ``$TORCH_HOME/hub/pyiqa`` (pyiqa's cache, its file names), the Hugging Face hub cache (timm), and last
the copies shipped inside installed wheels: the LPIPS v0.1 AlexNet heads in ``lpips`` and the DISTS alpha/beta in
``DISTS_pytorch`` are byte-identical to pyiqa's ``LPIPS_v0.1_alex-df73285e.pth`` and ``DISTS_weights-f5e65c96.pth``
(same SHA-256 prefix), so pyiqa's LPIPS, LPIPS+ and DISTS need only the torchvision AlexNet / VGG-16 files.

``backbone_weights: random`` skips every file: networks are randomly initialised, and every number computed with
them is labelled ``random`` by its consumer (metrics: the ``lpips_weights`` field).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torchvision
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file
from torch import nn
from torch.hub import download_url_to_file

from isp_search.errors import UserError
from isp_search.hashing import file_sha256
from isp_search.registry import Registry


@contextlib.contextmanager
def _hidden(module: str) -> Iterator[None]:
    """``import <module>`` raises ImportError inside (a ``None`` entry in ``sys.modules``), unless it is loaded."""
    if module in sys.modules:
        yield
        return
    sys.modules[module] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(module, 0) is None:
            del sys.modules[module]


# timm.utils (loaded by every timm model module) imports wandb when it is installed, for its training scripts' W&B
# logging, which isp-search never calls: 4.3 of the 4.7 s timm took to load in every trial worker, node check and
# driver (2-core machine, 2026-12-07). Our own W&B tracking (Ray Tune's logger) imports wandb itself, unhindered.
with _hidden("wandb"):
    import timm

WeightsMode = Literal["pretrained", "random"]
MODES = ("pretrained", "random")
ENV = "ISP_SEARCH_WEIGHTS"
_PYIQA_HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file: ``filename`` is the name looked for in every weights folder."""

    name: str
    filename: str
    url: str
    sha256: str | None  # known prefix of the file's SHA-256 (torch.hub checks it on download)
    used_by: str
    package_file: str | None = None  # "<package>/<path>" of a copy shipped in an installed wheel
    hf_repo: str | None = None  # timm's Hugging Face repo when it comes from there


WEIGHTS: Registry[WeightFile] = Registry("pretrained weight file")
for _w in (
    WeightFile("vgg19", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d",
               "content loss (VGG-19 relu5_4)"),
    # The original ViT-B/16 release (ImageNet-21k, fine-tuned on ImageNet-1k: the weights of HF
    # google/vit-base-patch16-224, which the authors' code used; docs/method.md §9), not timm's default augreg2
    # retraining.
    WeightFile("vit_b16", "vit_base_patch16_224.orig_in21k_ft_in1k.safetensors",
               "https://huggingface.co/timm/vit_base_patch16_224.orig_in21k_ft_in1k", None,
               "colour discriminator features (timm vit_base_patch16_224.orig_in21k_ft_in1k)",
               hf_repo="timm/vit_base_patch16_224.orig_in21k_ft_in1k"),
    WeightFile("alexnet", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
               "7be5be79", "LPIPS metric/loss trunk and texture discriminator features"),
    WeightFile("vgg16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af",
               "DISTS metric/loss trunk"),
    WeightFile("lpips_alex_v0.1", "LPIPS_v0.1_alex-df73285e.pth", _PYIQA_HF + "LPIPS_v0.1_alex-df73285e.pth",
               "df73285e", "LPIPS v0.1 AlexNet linear heads", package_file="lpips/weights/v0.1/alex.pth"),
    WeightFile("dists_alpha_beta", "DISTS_weights-f5e65c96.pth", _PYIQA_HF + "DISTS_weights-f5e65c96.pth",
               "f5e65c96", "DISTS alpha/beta", package_file="DISTS_pytorch/weights.pt"),
):
    WEIGHTS.add(_w.name, _w)


def check_mode(mode: str) -> str:
    """``mode`` itself if it is ``pretrained`` or ``random``, else a one-line UserError."""
    if mode not in MODES:
        raise UserError(f"backbone_weights: {mode!r} is not valid; valid: {', '.join(MODES)}")
    return mode


def set_weights_dir(path: str | os.PathLike) -> Path:
    """Search ``path`` first (a command's ``--weights-dir``); kept in the environment so child processes see it."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise UserError(f"--weights-dir {path}: not a folder")
    os.environ[ENV] = str(p)
    return p


def torch_hub_dir() -> Path:
    """``$TORCH_HOME/hub`` as torch.hub computes it (without importing torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub"


def torch_checkpoints_dir() -> Path:
    return torch_hub_dir() / "checkpoints"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def search_dirs() -> list[Path]:
    """The folders searched for a file by name, in order."""
    dirs = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    return dirs + [torch_checkpoints_dir(), torch_hub_dir() / "pyiqa"]


def _hf_snapshot(repo: str) -> Path | None:
    root = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    ref = root / "refs" / "main"
    snaps = [root / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    snaps += sorted((root / "snapshots").glob("*")) if (root / "snapshots").is_dir() else []
    for snap in snaps:
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (snap / fname).is_file():
                return snap / fname
    return None


def _package_copy(package_file: str) -> Path | None:
    package, _, rel = package_file.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    p = Path(spec.origin).parent / rel
    return p if p.is_file() else None


def find(name: str) -> Path | None:
    """The local path of weight file ``name`` (see the module docstring for the order), or None."""
    w = WEIGHTS.get(name)
    for d in search_dirs():
        if (d / w.filename).is_file():
            return d / w.filename
    if w.hf_repo and (p := _hf_snapshot(w.hf_repo)):
        return p
    return _package_copy(w.package_file) if w.package_file else None


def require(name: str) -> Path:
    """Like :func:`find`, but a missing file is a one-line error naming it, where it was looked for and the fix."""
    p = find(name)
    if p is None:
        w = WEIGHTS.get(name)
        where = [str(d) for d in search_dirs()] + ([str(hf_cache_dir())] if w.hf_repo else [])
        raise UserError(
            f"pretrained weights {name!r} ({w.filename}, for {w.used_by}) not found in {', '.join(where)}; fix: run "
            f"`isp-search weights fetch` on a machine with internet and copy {w.filename} into "
            f"{torch_checkpoints_dir()} (or a folder given as --weights-dir / ${ENV}), or set backbone_weights: random"
        )
    return p


def sha256_matches(path: Path, prefix: str | None) -> bool | None:
    """Whether the file's SHA-256 starts with ``prefix`` (None when no prefix is known)."""
    if not prefix:
        return None
    return file_sha256(path).startswith(prefix)


def status(verify: bool = False) -> list[dict]:
    """One row per weight file: name, file, used_by, path (None when missing) and, with ``verify``, sha256_ok."""
    rows = []
    for n in WEIGHTS.names():
        w, p = WEIGHTS.get(n), find(n)
        row = {"name": n, "file": w.filename, "used_by": w.used_by, "path": str(p) if p else None,
               "source": w.hf_repo and f"huggingface.co/{w.hf_repo}" or w.url}
        if verify:
            row["sha256_ok"] = sha256_matches(p, w.sha256) if p else None
        rows.append(row)
    return rows


def fetch(dest: str | os.PathLike | None = None, files: Iterable[WeightFile] | None = None) -> list[str]:
    """Download every missing file into ``dest`` (default: ``$ISP_SEARCH_WEIGHTS``, else torch's checkpoint
    folder); needs internet. Files shipped in wheels are skipped. Returns the names fetched."""

    dest = Path(dest or os.environ.get(ENV) or torch_checkpoints_dir())
    dest.mkdir(parents=True, exist_ok=True)
    got = []
    for w in files if files is not None else [WEIGHTS.get(n) for n in WEIGHTS.names()]:
        if (dest / w.filename).is_file() or (w.name in WEIGHTS and find(w.name)):
            continue
        try:
            if w.hf_repo:
                shutil.copyfile(hf_hub_download(w.hf_repo, "model.safetensors"), dest / w.filename)
            else:
                download_url_to_file(w.url, str(dest / w.filename), hash_prefix=w.sha256, progress=False)
        except (OSError, RuntimeError, ValueError) as e:  # no network, a proxy, a moved URL, a bad hash: one line
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"weights fetch: could not download {w.filename} from {w.url}: {msg}") from None
        got.append(w.name)
    return got


# ---- frozen networks built without any download (metrics and the trainer use these) ---------------------------

def random_seed_for(name: str) -> int:
    """The fixed seed of the random-initialised network ``name`` (a stable hash: the same in every process)."""
    return int.from_bytes(hashlib.sha256(f"isp-search/random/{name}".encode()).digest()[:8], "little") >> 1


@contextlib.contextmanager
def seeded_init(name: str):
    """Random initialisation inside this block draws from ``random_seed_for(name)``; the global (CPU and CUDA)
    RNG state is restored afterwards, so building a network never shifts a run's own random stream."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_seed_for(name))
        yield


def _freeze(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_state_dict_file(name: str) -> dict:
    """The state dict in weight file ``name`` (:func:`require`), on CPU; a corrupt file is a one-line error."""

    path = require(name)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- unpickling/zip/safetensors errors share no base class
        raise UserError(f"pretrained weights {name!r}: {path} could not be read ({type(e).__name__}); "
                        f"replace it (`isp-search weights fetch`)") from None


def _load_into(model, name: str, strict: bool = True, assign: bool = False):
    sd = load_state_dict_file(name)
    try:
        return model.load_state_dict(sd, strict=strict, assign=assign)
    except RuntimeError as e:
        want, got = set(model.state_dict()), set(sd)
        detail = (f"missing {sorted(want - got)[:3]}, unexpected {sorted(got - want)[:3]}" if want != got
                  else " ".join(str(e).split())[:160])
        raise UserError(f"pretrained weights {name!r}: {require(name)} does not fit "
                        f"{type(model).__name__} ({detail})") from None


def load_torchvision(name: str, mode: WeightsMode):
    """torchvision ``alexnet``/``vgg16``/``vgg19`` without any download, frozen (eval mode, no gradients).

    Built on the meta device, then: pretrained -> the local file's tensors are assigned (no init work); random ->
    the convolutional ``features`` get a variance-preserving Kaiming-normal init with zero bias (VGG: torchvision's
    own, fan-out; AlexNet: fan-in, because with PyTorch's default init its ``relu4`` output is nearly constant
    across images, leaving the texture discriminator nothing to judge) and the ``classifier``, which no project
    network uses, is zeros (drawing its ~100M weights would cost seconds per build). Random weights come from the
    fixed seed of ``name`` (:func:`seeded_init`), so they are the same in every process."""

    check_mode(mode)
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    if mode == "pretrained":
        _load_into(model, name, assign=True)
        return _freeze(model)
    model = model.to_empty(device="cpu")
    with seeded_init(name):
        _init_random_torchvision(model, name)
    return _freeze(model)


def _init_random_torchvision(model, name: str) -> None:
    for m in model.features.modules():
        if isinstance(m, nn.Conv2d) and name.startswith("vgg"):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    for m in model.classifier.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)


def load_vgg19_features(mode: WeightsMode):
    """VGG-19 ``features`` (conv part; ``[:36]`` ends at relu5_4), frozen."""
    return load_torchvision("vgg19", mode).features


def load_alexnet(mode: WeightsMode):
    """The whole torchvision AlexNet (``.features`` is what LPIPS uses), frozen."""
    return load_torchvision("alexnet", mode)


VIT_B16_TAG = "vit_base_patch16_224.orig_in21k_ft_in1k"


def load_vit_b16(mode: WeightsMode, img_size: int = 224):
    """timm ``vit_base_patch16_224.orig_in21k_ft_in1k`` for ``img_size`` inputs, frozen; in pretrained mode the
    local file goes through timm's own loader (``pretrained_cfg_overlay=dict(file=...)``), which resamples the
    position embeddings when ``img_size`` is not 224; random weights come from the fixed seed of its name."""

    check_mode(mode)
    kw: dict = {"img_size": img_size}
    if mode == "pretrained":
        kw.update(pretrained=True, pretrained_cfg_overlay={"file": str(require("vit_b16"))})
    try:
        with seeded_init(f"{VIT_B16_TAG}@{img_size}"):
            return _freeze(timm.create_model(VIT_B16_TAG, **kw))
    except (RuntimeError, OSError, ValueError) as e:
        if mode != "pretrained":
            raise
        raise UserError(f"pretrained weights 'vit_b16': {require('vit_b16')} could not be loaded "
                        f"({str(e).splitlines()[0][:120]})") from None
