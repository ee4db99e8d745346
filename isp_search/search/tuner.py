"""Run a search: a Ray Tune ``Tuner`` driven by the Optuna searcher, ASHA on the scalar score, resumable.

Layout of one experiment (``<storage>/<name>/``): Ray's experiment state and trial folders (each with its
checkpoints, ``result.json`` and TensorBoard events), ``optuna.journal`` (the Optuna study; open it with
``optuna-dashboard``) and ``isp_search.json`` (study name and storage, read back by ``--resume``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from isp_search.errors import UserError
from isp_search.search.space import Resources, SchedulerCfg, SearchSpace
from isp_search.search.space import score_mode as get_score_mode

META_FILE = "isp_search.json"


@dataclass(frozen=True)
class Experiment:
    """Where one search lives."""

    name: str
    storage: str  # storage root (local path or URI)
    study_name: str
    optuna_storage: str  # journal file path or RDB URL

    @property
    def uri(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def write_meta(exp: Experiment, space: SearchSpace) -> None:
    fs, path = _fs(exp.uri)
    fs.create_dir(path, recursive=True)
    doc = {"name": exp.name, "study_name": exp.study_name, "optuna_storage": exp.optuna_storage,
           "space": space.source, "objectives": [[o.metric, o.direction] for o in space.objectives],
           "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    with fs.open_output_stream(f"{path}/{META_FILE}") as f:
        f.write(json.dumps(doc, indent=1).encode())


def read_meta(uri: str) -> dict:
    fs, path = _fs(uri)
    try:
        with fs.open_input_stream(f"{path}/{META_FILE}") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        raise UserError(f"{uri}: not an isp-search experiment (no {META_FILE}); check --name and --storage") from None


def new_experiment(space: SearchSpace, name: str | None) -> Experiment:
    """A fresh experiment name (given or ``<space>-<time>``) and a unique study name."""
    name = name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    study = f"{name}-{uuid.uuid4().hex[:8]}"
    uri = f"{space.storage.path.rstrip('/')}/{name}"
    if space.storage.optuna:
        optuna_storage = space.storage.optuna
    elif "://" in space.storage.path:  # object stores cannot hold a journal file: keep it on the driver
        optuna_storage = str(Path.home() / ".cache" / "isp-search" / "optuna" / f"{name}.journal")
    else:
        optuna_storage = str(Path(uri) / "optuna.journal")
    return Experiment(name, space.storage.path, study, optuna_storage)


def find_experiment(space: SearchSpace, name: str | None) -> Experiment:
    """The experiment to resume: ``name``, or the newest ``<space>-*`` under the storage root."""
    root = space.storage.path
    if name is None:
        if "://" in root:
            raise UserError("--resume with an object-store storage needs --name")
        found = sorted((p for p in Path(root).glob(f"{space.name}-*") if (p / META_FILE).is_file()),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"--resume: no experiment of {space.name!r} under {root}; start one without --resume")
        name = found[-1].name
    meta = read_meta(f"{root.rstrip('/')}/{name}")
    return Experiment(name, root, meta["study_name"], meta["optuna_storage"])


def smoke_space(space: SearchSpace) -> SearchSpace:
    """``--smoke-test``: the same space on the tiny CPU training config, two trials, one at a time."""
    from isp_search.search.space import Base, PretrainCfg

    smoke_cfg = Path(__file__).resolve().parents[2] / "configs" / "smoke_unpaired.yaml"
    if not smoke_cfg.is_file():
        raise UserError(f"--smoke-test needs {smoke_cfg}")
    return replace(
        space,
        base=Base(config=str(smoke_cfg)),
        pretrain=PretrainCfg(),  # the smoke config trains from random on purpose (model.allow_scratch)
        search=replace(space.search, num_samples=2, max_concurrent=1, points_to_evaluate=space.search.points_to_evaluate[:1]),
        scheduler=SchedulerCfg(type="none", metric=space.scheduler.metric, mode=space.scheduler.mode),
        resources=Resources(cpu=1.0),
        export=replace(space.export, top_k=1, formats=("tflite",), size=(64, 64), bench_size=(64, 64), threads=1,
                       runs=3),
    )


def base_train_config(space: SearchSpace) -> Any:
    """The trainer config every trial starts from (loaded once on the driver, so errors show before Ray starts)."""
    from isp_search.train import apply_overrides, load_train_config

    if isinstance(space.base.config, dict):
        from isp_search.train import train_config_from_dict

        yaml_dir = Path(space.source).parent if space.source else Path.cwd()
        cfg = train_config_from_dict(space.base.config, base_dir=yaml_dir, name=f"{space.source}:base.config")
    else:
        cfg = load_train_config(space.base.config)
    if space.base.overrides:
        cfg = apply_overrides(cfg, dict(space.base.overrides))
    # trials log to TensorBoard and Ray's table; a progress bar per trial would only flood the driver's output
    return apply_overrides(cfg, {"train.progress": False})


def check_space_keys(space: SearchSpace, cfg: Any) -> None:
    """Every tuned key must exist in the trainer config: try one value of each (first choice / low)."""
    from isp_search.train import apply_overrides

    for key, p in space.space.items():
        value = p.choices[0] if p.type == "categorical" else (int(p.low) if p.type == "int" else p.low)
        for k in (key, *p.also):
            try:
                apply_overrides(cfg, {k: value})
            except UserError as e:
                raise UserError(f"{space.source}: space.{key}: {e}") from None


def _scheduler(space: SearchSpace, score_mode: str, cfg: Any):
    from ray.tune.schedulers import ASHAScheduler

    if space.scheduler.type == "none":
        return None
    # ASHA stops a trial once training_iteration reaches max_t; the trainable's closing report is one iteration
    # after the last evaluation, and must arrive for the trial to count as COMPLETE.
    max_t = space.scheduler.max_t or int(getattr(cfg, "num_evaluations", 0) or 1000) + 1
    return ASHAScheduler(time_attr="training_iteration", metric=space.scheduler.metric, mode=score_mode,
                         max_t=max_t, grace_period=space.scheduler.grace_period,
                         reduction_factor=space.scheduler.reduction_factor)


def _trainable(space: SearchSpace, cfg: Any, score_mode: str, exp_uri: str, recorded: dict | None = None):
    from ray import tune

    from isp_search.search.guard import guard
    from isp_search.search.trainable import run_trial

    res = space.resources
    resources = {"cpu": res.cpu, "gpu": res.gpu, **res.custom}
    # guard: trials final in Optuna replay their ``recorded`` result; errors reach Optuna with their real cause
    return tune.with_resources(tune.with_parameters(guard(run_trial), space=space, base_cfg=cfg, score_mode=score_mode,
                                                    exp_uri=exp_uri, recorded=recorded), resources)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS`` under ``ray job submit``), else start a local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic CLIReporter table, with both objectives as columns
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")
    import ray

    from isp_search.quiet import ray_runtime_env

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False if address is None and not os.environ.get("RAY_ADDRESS")
                 else None, log_to_driver=True, runtime_env=ray_runtime_env() or None)  # quiet workers


def run_search(space: SearchSpace, name: str | None = None, resume: bool = False, address: str | None = None,
               exp: Experiment | None = None):
    """Run (or resume) the search described by ``space``; returns ``(experiment, ResultGrid, info)``.

    ``exp``: the experiment, already made by the study's earlier stages (``isp_search.search.study``)."""
    from ray import tune

    from isp_search.search.guard import DeterministicErrors
    from isp_search.search.reconcile import prepare_resume
    from isp_search.search.reporter import TrialTable
    from isp_search.search.searcher import make_searcher

    cfg = base_train_config(space)
    check_space_keys(space, cfg)
    score_mode = get_score_mode(space)
    exp = exp or (find_experiment(space, name) if resume else new_experiment(space, name))
    connect(address)
    restoring = resume and tune.Tuner.can_restore(exp.uri)
    trainable = _trainable(space, cfg, score_mode, exp.uri, recorded=prepare_resume(exp, space) if restoring else None)
    if restoring:
        tuner = tune.Tuner.restore(exp.uri, trainable=trainable, resume_errored=True)
    else:  # a fresh search, or one cut off before its first trial (during prepare or pretrain)
        if not resume:
            write_meta(exp, space)
        searcher = make_searcher(space, exp.study_name, exp.optuna_storage, exp.name)
        metric_columns = {m: m for m in space.metric_names} | {space.scheduler.metric: space.scheduler.metric,
                                                               "step": "step"}
        reporter = TrialTable(metric_columns=metric_columns, parameter_columns=list(space.space))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(space, score_mode, cfg),
                                        num_samples=space.search.num_samples,
                                        max_concurrent_trials=space.search.max_concurrent,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=exp.name, storage_path=space.storage.path, progress_reporter=reporter, verbose=1,
                failure_config=tune.FailureConfig(max_failures=space.search.max_failures),
                callbacks=[DeterministicErrors(space.search.max_failures)],  # a bad config/file fails at once
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2,
                                                        checkpoint_score_attribute=space.scheduler.metric,
                                                        checkpoint_score_order=score_mode),
            ),
        )
    results = tuner.fit()
    return exp, results, {"score_mode": score_mode, "data": data_of(cfg), "mode": getattr(cfg, "mode", None)}


def data_of(cfg: Any) -> tuple[str, str] | None:
    """(root, format) of the trainer config's data set, for export calibration and sample crops."""
    data = getattr(cfg, "data", None)
    root, fmt = getattr(data, "root", None), getattr(data, "format", None)
    return (str(root), str(fmt)) if root and fmt else None
