"""``isp-search check-method [--json] [--small]``: does the unpaired method learn a known colour shift?"""

from __future__ import annotations

import argparse
import json

from isp_search.diagnostics.learnability import check_method, describe


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check-method", help="check that unpaired training learns a known colour shift (random frozen nets, CPU)",
        description="Builds (deterministically) an unpaired problem with a known answer: synthetic RAW, and as target "
        "domain the ground-truth RGB under a fixed colour cast and tone curve that the demosaiced reference lacks. "
        "Pretrains briefly, runs the unpaired stage (the real trainer, loss set, DLA and discriminators) and prints "
        "how far the outputs' mean CIE LAB moved toward the target domain's, and the SSIM of their luminance to the "
        "reference's (structure kept); then probes the trained models' mechanism on held-out images (each "
        "discriminator's margin D(real) - D(fake), each discriminator update against docs/method.md §4.7's loss with R1/R2 on the "
        "feature tensors, each generator term's DLA share of the update) and prints one ok/FAIL line per criterion. "
        "Exits 0 only if every criterion holds. Needs no downloads; CPU only.")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--small", action="store_true", help="the test's smaller version (fewer images and steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and both training runs")
    p.add_argument("--work-dir", default=None, help="keep the data and run folders here (default: a temporary one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = check_method("small" if args.small else "full", args.work_dir, args.seed)
    print(json.dumps(res) if args.json else describe(res))
    return 0 if res["passed"] else 1
