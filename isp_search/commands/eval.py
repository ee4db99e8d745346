"""``isp-search eval``: all metrics of a model on a data-set split, and the number of images."""

from __future__ import annotations

import argparse
import json

import torch

from isp_search.data.dataset import Caching, RawRGBDataset
from isp_search.errors import UserError
from isp_search.metrics import Evaluator, evaluate_model
from isp_search.models.checkpoint import load_generator
from isp_search.weights import set_weights_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a model: PSNR, SSIM, MS-SSIM, LPIPS, DISTS on a split",
        description="Metrics of the clamped output on RGB in [0,1] against the paired ground truth (TF SSIM settings; "
        "LPIPS AlexNet v0.1). LPIPS/DISTS need pretrained weights (see `isp-search weights status`); with "
        "--backbone-weights random they run randomly initialised and the result is labelled so.")
    p.add_argument("--arch", default=None, help="backbone name, needed for a paper state_dict: efficient_isp, "
                   "robust_isp or rmfa_tiny (our checkpoints carry it)")
    p.add_argument("--weights", required=True, help="checkpoint file, run folder or paper state_dict")
    p.add_argument("--data", required=True, help="data set root")
    p.add_argument("--format", required=True, help="data format: mai2022, zrr or folder")
    p.add_argument("--split", default="test", help="split: train, val or test (default: test)")
    p.add_argument("--preset", default=None, help="normalisation preset: paper, pynet or rmfa (default: the model's)")
    p.add_argument("--backbone-weights", choices=("pretrained", "random"), default="pretrained",
                   help="LPIPS/DISTS networks: local pretrained files or random init (default: pretrained)")
    p.add_argument("--weights-dir", default=None, help="extra folder searched first for pretrained files")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (same-size images only; default 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:


    if args.batch_size < 1:
        raise UserError(f"--batch-size: expected an integer >= 1, got {args.batch_size}")
    if args.weights_dir:
        set_weights_dir(args.weights_dir)
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise UserError(f"--device {args.device}: {str(e).splitlines()[0]}") from None
    evaluator = Evaluator(weights_mode=args.backbone_weights, device=device)  # missing weights fail before the data
    loaded = load_generator(args.weights, arch=args.arch, preset=args.preset, device=device)
    ds = RawRGBDataset(args.data, args.format, args.split, loaded.spec, preset=loaded.preset, caching=Caching(with_reference=False))
    res = evaluate_model(loaded.model, loaded.spec, ds, device=device, evaluator=evaluator, batch_size=args.batch_size)
    res.update(arch=loaded.spec.name, preset=loaded.preset, split=args.split, weights=str(loaded.path))
    if args.json:
        print(json.dumps(res))
        return 0
    label = " (LPIPS/DISTS with RANDOM backbones: not comparable)" if res.get("lpips_weights") == "random" else ""
    n = res["n_images"]
    print(f"{loaded.spec.name} ({loaded.preset} preset) on {args.data} [{args.split}]: {n} image{'s' * (n != 1)}")
    for k in ("psnr", "ssim", "ms_ssim", "lpips", "dists"):
        note = label if k in ("lpips", "dists") else ""
        if k == "ms_ssim" and res.get("ms_ssim_scales", 5) < 5:
            note = f" ({res['ms_ssim_scales']} scales: 5 need sides >= 161 px)"
        print(f"  {k:<8}{res[k]:.4f}{note}")
    return 0
