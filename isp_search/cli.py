"""The ``isp-search`` command line. Each subcommand lives in ``isp_search/commands/<module>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (returning an exit code) as a default; only the
subcommand being run is imported (:data:`isp_search.commands.COMMANDS`), so ``isp-search --help`` answers at once."""

from __future__ import annotations

import argparse
import importlib
import sys

from isp_search import __version__
from isp_search.commands import COMMANDS
from isp_search.errors import UserError, as_the_user_knows_it


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or (``command`` given) that subcommand in full and the others by name and help only."""
    parser = argparse.ArgumentParser(
        prog="isp-search",
        description="Train, tune and export learned lightweight smartphone ISPs (RAW -> RGB) with unpaired data.",
    )
    parser.add_argument("--version", action="version", version=f"isp-search {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"isp_search.commands.{module}").register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # the first word that is not an option
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"isp-search: error: {as_the_user_knows_it(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("isp-search: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
