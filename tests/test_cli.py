"""The CLI imports only the subcommand it runs: its table of commands matches the modules, and listing the
commands loads neither torch nor Ray."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys

import isp_search.commands as commands
from isp_search.commands import COMMANDS


def test_command_table_matches_the_modules():
    registered = {}
    for info in pkgutil.iter_modules(commands.__path__):
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"isp_search.commands.{info.name}").register(sub)
        for action in sub._choices_actions:
            registered[action.dest] = (info.name, action.help)
    assert registered == COMMANDS


def test_listing_commands_loads_no_heavy_library():
    code = ("import sys\nfrom isp_search.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'tensorflow') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip().endswith("[]"), r.stdout[-300:]
    assert all(name in r.stdout for name in COMMANDS)


def test_a_subcommand_gets_its_full_parser():
    from isp_search.cli import build_parser

    args = build_parser("search").parse_args(["search", "space.yaml", "--resume", "--set", "a.b=1"])
    assert args.space == "space.yaml" and args.resume and args.overrides == ["a.b=1"] and callable(args.func)
