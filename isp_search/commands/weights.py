"""``isp-search weights``: which pretrained files are present, and fetching them where there is internet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("weights", help="show or fetch the pretrained feature-network weights",
                              description="VGG-19, ViT-B/16, AlexNet, VGG-16, LPIPS heads and DISTS alpha/beta.")
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="list every weight file, where it was found or that it is missing")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=run_status)
    fe = sub.add_parser("fetch", help="download the missing files (needs internet)")
    fe.add_argument("--dir", default=None, help="destination (default: $ISP_SEARCH_WEIGHTS or torch's cache)")
    fe.set_defaults(func=run_fetch)


def run_status(args: argparse.Namespace) -> int:
    from isp_search.weights import search_dirs, status

    rows = status()
    if args.json:
        print(json.dumps(rows))
        return 0
    print("searched: " + ", ".join(str(d) for d in search_dirs()))
    for r in rows:
        print(f"{'ok     ' if r['path'] else 'MISSING'} {r['name']:<18} {r['path'] or r['file']}  ({r['used_by']})")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from isp_search.weights import fetch

    got = fetch(Path(args.dir) if args.dir else None)
    print("fetched: " + (", ".join(got) if got else "nothing (all present)"))
    return 0
