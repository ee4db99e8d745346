"""``isp-search study-value EXP [EXP ...]``: what finished studies were worth, from their own records."""

from __future__ import annotations

import argparse

from isp_search.diagnostics.study_value import format_report, read_study

HELP = "what finished studies were worth: baselines vs confirmed best, hypervolume by trial count, where time went"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "study-value", help=HELP,
        description="Reads finished experiment folders (<storage>/<name>) and prints, per study, the start, the "
        "default point and the searched configurations the confirmation stage re-trained (val and test, mean ± sd "
        "over n runs); the hypervolume beyond the start after every 8 trials, side by side (e.g. a study and the "
        "same space with --set search.sampler=random); and where each study's wall clock went (training steps, "
        "evaluation, checkpoints, start-up, Ray and idle slots, per stage).")
    p.add_argument("experiments", nargs="+", metavar="EXP", help="experiment folder, e.g. results/search/synth-tpe")
    p.add_argument("--every", type=int, default=8, help="hypervolume every N trials (default: 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(format_report([read_study(e) for e in args.experiments], every=args.every))
    return 0
