"""``isp-search predict``: run a model on one RAW PNG (any size with even sides) and write the RGB PNG."""

from __future__ import annotations

import argparse

import torch

from isp_search.data.io import read_raw, write_rgb
from isp_search.models.checkpoint import load_generator
from isp_search.raw import get_preset


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="run a model on a RAW PNG/DNG and write the RGB image",
        description="Loads our checkpoints and run folders (they carry backbone and preset) and the paper's published "
        "state_dict files (saved from CUDA: mapped to CPU; pass --arch). Output is clamped to [0, 1], 8-bit PNG.")
    p.add_argument("--arch", default=None, help="backbone: efficient_isp, robust_isp or rmfa_tiny (paper files)")
    p.add_argument("--weights", required=True, help="checkpoint file, run folder or paper state_dict")
    p.add_argument("--raw", required=True, help="input RAW: 16-bit single-channel PNG (10-bit values) or DNG")
    p.add_argument("--out", required=True, help="output RGB PNG")
    p.add_argument("--preset", default=None, help="normalisation preset: paper, pynet or rmfa (default: the model's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:


    if args.preset:
        get_preset(args.preset)
    loaded = load_generator(args.weights, arch=args.arch, preset=args.preset)
    raw = torch.from_numpy(read_raw(args.raw).astype("float32"))
    x = loaded.spec.prepare_input(raw, loaded.preset)[None]
    with torch.no_grad():
        y = loaded.model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    write_rgb(args.out, y)
    print(f"wrote {args.out} ({y.shape[1]}x{y.shape[0]}) with {loaded.spec.name} ({loaded.preset} preset)")
    return 0
