"""``isp-search eval``: all metrics of a model on a data-set split, and the number of images."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a model: PSNR, SSIM, MS-SSIM, LPIPS, DISTS on a split",
        description="Metrics on RGB in [0,1] against the paired ground truth. LPIPS/DISTS need pretrained weights "
        "(see `isp-search weights status`); with --backbone-weights random they run randomly initialised and the "
        "result is labelled so.")
    p.add_argument("--arch", default=None, help="backbone name (needed for a paper state_dict)")
    p.add_argument("--weights", required=True, help="checkpoint file, run folder or paper state_dict")
    p.add_argument("--data", required=True, help="data set root")
    p.add_argument("--format", required=True, help="data format: mai2022, zrr or folder")
    p.add_argument("--split", default="test", help="split: train, val or test (default: test)")
    p.add_argument("--preset", default=None, help="normalisation preset (default: the model's)")
    p.add_argument("--backbone-weights", choices=("pretrained", "random"), default="pretrained",
                   help="metric networks: local pretrained files or random init (default: pretrained)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from isp_search.data.dataset import RawRGBDataset
    from isp_search.metrics import evaluate_model
    from isp_search.models.checkpoint import load_generator

    loaded = load_generator(args.weights, arch=args.arch, preset=args.preset)
    ds = RawRGBDataset(args.data, args.format, args.split, loaded.spec, preset=loaded.preset, with_reference=False)
    res = evaluate_model(loaded.model, loaded.spec, ds, weights_mode=args.backbone_weights)
    res.update(arch=loaded.spec.name, preset=loaded.preset, split=args.split)
    if args.json:
        print(json.dumps(res))
    else:
        label = " (random LPIPS/DISTS backbones)" if res.get("lpips_weights") == "random" else ""
        print(f"{loaded.spec.name} on {args.data} [{args.split}], {res['n_images']} images{label}")
        for k in ("psnr", "ssim", "ms_ssim", "lpips", "dists"):
            print(f"  {k:<8}{res[k]:.4f}")
    return 0
