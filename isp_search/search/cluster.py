"""Joining the Ray cluster a study runs on."""

from __future__ import annotations

import os

import ray

from isp_search.quiet import ray_runtime_env


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS`` under ``ray job submit``), else start a local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic CLIReporter table, with both objectives as columns
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False if address is None and not os.environ.get("RAY_ADDRESS")
                 else None, log_to_driver=True, runtime_env=ray_runtime_env() or None)  # quiet workers
