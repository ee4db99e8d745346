"""Joining the Ray cluster a study runs on, with Ray Tune set up for a readable job log and one TensorBoard run
per trial.

Ray Tune's own ``TBXLoggerCallback`` would write a second TensorBoard event file into every trial folder, beside
the trainer's (``trial_<id>/run/tb``): TensorBoard then lists each trial twice. Its automatic loggers are turned
off and the two that Tune's results need (``result.json``, ``progress.csv``) named instead, through the variables
Tune reads when a ``Tuner`` (new or restored) starts.
"""

from __future__ import annotations

import logging
import os

import ray

from isp_search.quiet import ray_runtime_env

TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_TUNE_CALLBACKS": "ray.tune.logger.JsonLoggerCallback,ray.tune.logger.CSVLoggerCallback",
    # three lines on every forced snapshot (each trial checkpoints num_to_keep times): nothing a user can change
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # a failed trial is one line of the trial table (TrialTable); its traceback is in the trial's error.txt
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
}


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS`` under ``ray job submit``), else start a local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic reporter: TrialTable, with both objectives as columns
    for k, v in TUNE_ENV.items():
        os.environ.setdefault(k, v)
    if not ray.is_initialized():
        # Ray's own INFO lines (three on connecting, ANSI-coloured) stay out of the log; one line says where
        ctx = ray.init(address=address, include_dashboard=False if address is None and not os.environ.get(
            "RAY_ADDRESS") else None, log_to_driver=True, logging_level=logging.WARNING,
            runtime_env=ray_runtime_env() or None)  # quiet workers
        info = ctx.address_info
        print(f"ray: connected to {info.get('address')}" + (f", dashboard http://{info['webui_url']}"
                                                            if info.get("webui_url") else ""), flush=True)
