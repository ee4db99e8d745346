"""Subcommands of ``isp-search``; every module here with a ``register(subparsers)`` is picked up by the CLI."""
