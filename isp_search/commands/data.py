"""``isp-search data synth`` (build the embedded synthetic data set) and ``isp-search data check`` (validate one)."""

from __future__ import annotations

import argparse
import json

from isp_search.data.check import check_dataset, format_report
from isp_search.data.synth import format_stats, split_stats, synthesize


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build the synthetic data set or check a data set folder",
                                   description="Data-set tools: synthesise the embedded data set, check a folder.")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser(
        "synth",
        help="write a synthetic RAW/RGB data set (bundled photos + dead leaves, unprocessed to RAW) in a real layout",
        description="Crop the natural colour photos that scikit-image, matplotlib and pyiqa ship (no download; "
        "list and licences: isp_search/data/photos.py), add dead-leaves scenes (ISO 19567-2) coloured like the "
        "training photos, unprocess each into RAW (Brooks et al. 2019; RGGB, 10-bit, black 64, white 1023) and "
        "write RAW beside its ground-truth RGB in the MAI 2022 or ZRR layout. Splits come from disjoint photos; "
        "the per-split brightness and colour statistics are printed. Same seed, same bytes.",
    )
    synth.add_argument("out", metavar="OUT", help="output folder (must be empty or not exist)")
    synth.add_argument("--format", choices=("mai2022", "zrr"), default="mai2022",
                       help="layout to write: mai2022 (mediatek_raw/ + fujifilm/*.png) or zrr (huawei_raw/ + "
                       "canon/*.jpg) (default: mai2022)")
    synth.add_argument("--n-train", type=int, default=64, help="training samples (default: 64)")
    synth.add_argument("--n-val", type=int, default=16, help="validation samples (default: 16)")
    synth.add_argument("--n-test", type=int, default=16, help="test samples (default: 16)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed gives identical files (default: 0)")
    synth.add_argument("--size", type=int, default=128,
                       help="side of each square sample in pixels, even; photos smaller than this are upscaled by the "
                       "least factor that fits (448, ZRR's size: at most 1.5x) (default: 128)")
    synth.add_argument("--dead-leaves", type=float, default=0.25, metavar="FRACTION",
                       help="fraction of each split that is dead-leaves scenes, 0 to 1 (default: 0.25)")
    synth.add_argument("--json", action="store_true", help="print the split statistics as one JSON object")
    synth.set_defaults(func=run_synth)

    check = sub.add_parser(
        "check",
        help="read every file of a data set and report counts, sizes, bit depth, value range and pairing",
        description="Decode every RAW and RGB file; exit 2 naming the file on a missing counterpart, a corrupt "
        "image or a wrong bit depth.",
    )
    check.add_argument("root", metavar="ROOT", help="data set folder")
    check.add_argument("--format", required=True, help="data format: zrr, mai2022 or folder")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.set_defaults(func=run_check)


def run_synth(args: argparse.Namespace) -> int:
    out = synthesize(args.out, args.format, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                     seed=args.seed, size=args.size, dead_leaves=args.dead_leaves)
    stats = split_stats(out, args.format)
    if args.json:
        print(json.dumps({"root": str(out), "splits": stats}))
        return 0
    print(f"wrote {args.format} synthetic data set ({args.n_train} train / {args.n_val} val / {args.n_test} test, "
          f"{args.size}x{args.size}, {args.dead_leaves:.0%} dead leaves, seed {args.seed}) to {out}")
    print("RGB statistics per split (mean = mean of R, G, B; <0.1 / >0.9: fraction of dark / bright pixels):")
    print(format_stats(stats))
    return 0


def run_check(args: argparse.Namespace) -> int:
    report = check_dataset(args.root, args.format)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
