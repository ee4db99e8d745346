"""One place that finds every pretrained file; nothing is downloaded unless ``isp-search weights fetch`` is run.

Search order for a file: ``$ISP_SEARCH_WEIGHTS``, ``$TORCH_HOME/hub/checkpoints`` (torchvision's own cache, so a
file placed there is also what torchvision loads), the Hugging Face hub cache (timm), and for the LPIPS heads and
DISTS alpha/beta the files shipped inside the ``lpips`` and ``DISTS_pytorch`` wheels.

``backbone_weights: random`` (a config value) skips every file: networks are randomly initialised and every number
computed with them is labelled ``random``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from isp_search.errors import UserError
from isp_search.registry import Registry

WeightsMode = Literal["pretrained", "random"]
MODES = ("pretrained", "random")


@dataclass(frozen=True)
class WeightFile:
    name: str
    filename: str
    url: str
    used_by: str
    package: str | None = None  # shipped inside this installed package (relative path = filename)
    hf_repo: str | None = None  # timm's HF hub repo, when it comes from there


WEIGHTS: Registry[WeightFile] = Registry("pretrained weight file")
for _w in (
    WeightFile("vgg19", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
               "content loss (VGG-19 relu5_4)"),
    WeightFile("vit_b16", "vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors",
               "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "colour discriminator features",
               hf_repo="timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    WeightFile("alexnet", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
               "LPIPS metric and texture discriminator features"),
    WeightFile("vgg16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
               "DISTS metric/loss"),
    WeightFile("lpips_alex_v0.1", "weights/v0.1/alex.pth", "(ships in the lpips wheel)", "LPIPS linear heads",
               package="lpips"),
    WeightFile("dists_alpha_beta", "weights.pt", "(ships in the DISTS_pytorch wheel)", "DISTS alpha/beta",
               package="DISTS_pytorch"),
):
    WEIGHTS.add(_w.name, _w)


def torch_checkpoints_dir() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def _hf_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
                / "hub")


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ISP_SEARCH_WEIGHTS"):
        dirs.append(Path(os.environ["ISP_SEARCH_WEIGHTS"]))
    dirs.append(torch_checkpoints_dir())
    return dirs


def find(name: str) -> Path | None:
    """The local path of weight file ``name``, or None."""
    w = WEIGHTS.get(name)
    if w.package:
        spec = importlib.util.find_spec(w.package)
        if spec and spec.origin:
            p = Path(spec.origin).parent / w.filename
            if p.is_file():
                return p
    for d in search_dirs():
        if (d / Path(w.filename).name).is_file():
            return d / Path(w.filename).name
    if w.hf_repo:
        snap = _hf_cache() / f"models--{w.hf_repo.replace('/', '--')}" / "snapshots"
        hits = sorted(snap.glob("*/model.safetensors")) if snap.is_dir() else []
        if hits:
            return hits[-1]
    return None


def require(name: str) -> Path:
    """Like :func:`find`, but a missing file is a one-line error naming it, where it was looked for and the fix."""
    p = find(name)
    if p is None:
        w = WEIGHTS.get(name)
        where = ", ".join(str(d) for d in search_dirs())
        raise UserError(
            f"pretrained weights {name!r} ({w.filename}, for {w.used_by}) not found in {where}; run "
            f"`isp-search weights fetch` on a machine with internet and copy the file there, or set "
            f"backbone_weights: random"
        )
    return p


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"backbone_weights: {mode!r} is not valid; valid: {', '.join(MODES)}")
    return mode


def status() -> list[dict]:
    return [{"name": n, "file": WEIGHTS.get(n).filename, "used_by": WEIGHTS.get(n).used_by,
             "path": str(find(n)) if find(n) else None} for n in WEIGHTS.names()]


def fetch(dest: Path | None = None) -> list[str]:
    """Download every missing file (needs internet); returns what was fetched."""
    import torch.hub

    dest = dest or (Path(os.environ["ISP_SEARCH_WEIGHTS"]) if os.environ.get("ISP_SEARCH_WEIGHTS")
                    else torch_checkpoints_dir())
    dest.mkdir(parents=True, exist_ok=True)
    got = []
    for n in WEIGHTS.names():
        w = WEIGHTS.get(n)
        if find(n) or w.package:
            continue
        try:
            if w.hf_repo:
                from huggingface_hub import hf_hub_download

                hf_hub_download(w.hf_repo, "model.safetensors")
            else:
                torch.hub.download_url_to_file(w.url, str(dest / w.filename), progress=False)
        except Exception as e:  # no network here: say so in one line
            raise UserError(f"weights fetch: could not download {w.filename} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:100] if str(e) else 'no network?'})") from None
        got.append(n)
    return got


# ---- frozen feature networks (used by metrics and the trainer) -------------------------------------------------

def _freeze(m):
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def load_torchvision(name: str, mode: WeightsMode):
    """torchvision ``alexnet``/``vgg16``/``vgg19`` built without downloading; local weights in pretrained mode."""
    import torch
    import torchvision

    check_mode(mode)
    model = getattr(torchvision.models, name)(weights=None)
    if mode == "pretrained":
        model.load_state_dict(torch.load(require(name), map_location="cpu", weights_only=True))
    return _freeze(model)


def load_vgg19_features(mode: WeightsMode):
    return load_torchvision("vgg19", mode).features


def load_alexnet(mode: WeightsMode):
    return load_torchvision("alexnet", mode)


def load_vit_b16(mode: WeightsMode, img_size: int = 224):
    """timm ``vit_base_patch16_224`` with a configurable input size; the local file in pretrained mode."""
    import timm

    check_mode(mode)
    kw = {"img_size": img_size}
    if mode == "pretrained":
        kw.update(pretrained=True, pretrained_cfg_overlay={"file": str(require("vit_b16"))})
    return _freeze(timm.create_model("vit_base_patch16_224", **kw))
