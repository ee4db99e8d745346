"""The driver's side of ``--resume``: before ``Tuner.restore``, put Ray's saved state and the Optuna study in step.

:func:`patch_search_state` raises the number of trials of a restored experiment (``--resume --num-samples N``)
and makes Ray's concurrency limiter pass on the result of a re-run errored trial (it forgot the trial when it
failed, and would drop its result: the reported "resumed work thrown away"). :func:`prepare_resume` restores an
object-store study's journal and lists the results Ray must replay rather than re-run
(:func:`isp_search.search.reconcile.recorded_results`).
"""

from __future__ import annotations

import json
from typing import Any

from pyarrow import fs as pafs
from ray import cloudpickle

from isp_search.search import journal
from isp_search.search.experiment import Experiment
from isp_search.search.optuna_storage import load_study
from isp_search.search.reconcile import latest_by_ray_id, recorded_results, rerunnable
from isp_search.search.space import SearchSpace


def _newest(fs: Any, root: str, prefix: str) -> str | None:
    found = [i.path for i in fs.get_file_info(pafs.FileSelector(root)) if i.base_name.startswith(prefix)]
    return max(found) if found else None  # Ray loads the newest by name (the session timestamp)


def ray_statuses(experiment_uri: str) -> dict[str, str]:
    """Ray trial id -> status (RUNNING, ERROR, TERMINATED, ...) in the experiment's newest saved state."""
    fs, root = pafs.FileSystem.from_uri(experiment_uri)
    newest = _newest(fs, root, "experiment_state-")
    if newest is None:
        return {}
    with fs.open_input_stream(newest) as f:
        state = json.loads(f.read().decode())
    out = {}
    for trial_json, _ in state.get("trial_data", []):
        t = json.loads(trial_json)
        out[str(t.get("trial_id"))] = str(t.get("status"))
    return out


def patch_search_state(experiment_uri: str, num_samples: int) -> int | None:
    """Fix the experiment's saved search state before ``Tuner.restore``: the trial count raised to
    ``num_samples`` (a restore ignores the Tuner's own num_samples), and every trial Ray will run again (errored or
    unfinished) counted live in the concurrency limiter, which otherwise drops the result of a re-run errored trial
    (it forgot the trial when it failed) and Optuna never hears of it. Returns the previous count when raised."""
    fs, root = pafs.FileSystem.from_uri(experiment_uri)
    newest = _newest(fs, root, "search_gen_state-")
    if newest is None:
        return None
    with fs.open_input_stream(newest) as f:
        state = cloudpickle.loads(f.read())
    before = int(state.get("total_samples", 0))
    if num_samples > before:
        state["total_samples"] = num_samples
        state["finished"] = False
    limiter = state.get("name:ConcurrencyLimiter")
    if limiter is not None:
        again = {tid for tid, status in ray_statuses(experiment_uri).items() if status != "TERMINATED"}
        limiter["live_trials"] = set(limiter.get("live_trials", set())) | again
    with fs.open_output_stream(newest) as f:
        f.write(cloudpickle.dumps(state))
    return before if num_samples > before else None


def prepare_resume(exp: Experiment, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Before ``Tuner.restore``: the journal restored from storage (object stores), the trial count raised to
    ``search.num_samples`` and the results Ray must replay rather than re-run (trials final in the study)."""
    if "://" not in exp.optuna_storage:
        journal.pull(exp.optuna_storage, journal.mirror_uri(exp.storage, exp.name, exp.optuna_storage))
    before = patch_search_state(exp.uri, space.search.num_samples)
    if before is not None:
        print(f"resume: the search is extended from {before} to {space.search.num_samples} trials", flush=True)
    study = load_study(exp.study_name, exp.optuna_storage)
    recorded = recorded_results(study, space.metric_names)
    rerun = [t.number for t in latest_by_ray_id(study).values() if rerunnable(t)]
    print(f"resume: {len(recorded)} trial(s) final in the study are kept (replayed, not trained again)"
          + (f"; {len(rerun)} that failed by an error run again" if rerun else ""), flush=True)
    return recorded
