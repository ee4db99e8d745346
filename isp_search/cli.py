"""The ``isp-search`` command line. Each subcommand lives in ``isp_search/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (returning an exit code) as a default."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from isp_search import __version__
from isp_search.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isp-search",
        description="Train, tune and export learned lightweight smartphone ISPs (RAW -> RGB) with unpaired data.",
    )
    parser.add_argument("--version", action="version", version=f"isp-search {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import isp_search.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"isp_search.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"isp-search: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("isp-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
