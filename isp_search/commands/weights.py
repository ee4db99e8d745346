"""``isp-search weights``: which pretrained files are present and where, and fetching them where there is internet."""

from __future__ import annotations

import argparse
import json

from isp_search import weights as W
from isp_search.weights import fetch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights", help="show or fetch the pretrained feature-network weights",
        description="VGG-19 (content loss), ViT-B/16 (colour discriminator), AlexNet (LPIPS, texture discriminator), "
        "VGG-16 (DISTS), the LPIPS heads and the DISTS alpha/beta (these two ship inside the lpips and DISTS_pytorch "
        "wheels). Searched in --weights-dir / $ISP_SEARCH_WEIGHTS, $TORCH_HOME/hub/checkpoints, $TORCH_HOME/hub/pyiqa, "
        "the Hugging Face cache, then the wheels. Nothing is downloaded except by `weights fetch`.")
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="list every weight file, where it was found or that it is missing",
                        description="One line per file: ok/MISSING, name, path (or the file name looked for).")
    st.add_argument("--weights-dir", default=None, help="extra folder searched first (same as $ISP_SEARCH_WEIGHTS)")
    st.add_argument("--verify", action="store_true", help="also check each found file's SHA-256 prefix (slow)")
    st.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    st.set_defaults(func=run_status)
    fe = sub.add_parser("fetch", help="download the missing files (needs internet)",
                        description="Downloads each missing file (torchvision URLs with their SHA-256 check; ViT-B/16 "
                        "from the Hugging Face hub). Copy the folder to machines without internet and point "
                        "--weights-dir or $ISP_SEARCH_WEIGHTS at it.")
    fe.add_argument("--dir", default=None,
                    help="destination folder (default: $ISP_SEARCH_WEIGHTS, else $TORCH_HOME/hub/checkpoints)")
    fe.set_defaults(func=run_fetch)


def run_status(args: argparse.Namespace) -> int:
    if args.weights_dir:
        W.set_weights_dir(args.weights_dir)
    rows = W.status(verify=args.verify)
    if args.json:
        print(json.dumps(rows))
        return 0
    print("searched: " + ", ".join(str(d) for d in W.search_dirs()) + f", {W.hf_cache_dir()}, installed wheels")
    for r in rows:
        state = "ok     " if r["path"] else "MISSING"
        if r.get("sha256_ok") is False:
            state = "BAD SHA"
        where = f"{r['file']} at {r['path']}" if r["path"] else f"{r['file']} (from {r['source']})"
        print(f"{state} {r['name']:<17} {where}  ({r['used_by']})")
    missing = [r["name"] for r in rows if not r["path"]]
    if missing:
        print(f"{len(missing)} missing: run `isp-search weights fetch` where there is internet, or use "
              f"backbone_weights: random (results are then labelled random)")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    got = fetch(args.dir)
    print("fetched: " + (", ".join(got) if got else "nothing (all present)"))
    return 0
