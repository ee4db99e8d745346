"""Experiment tracking where users already look: a space's ``tracking:`` section turns on Ray Tune's own MLflow and
Weights & Biases logger callbacks (nothing hand-written). Each trial becomes one MLflow run and one W&B run holding
its sampled parameters and every report's metrics, named after the Ray trial (``<trainable>_<trial id>``; the W&B
run id is the trial id) and filed under the study's experiment name.

Both loggers run on the driver's node: MLflow in the driver process, W&B in one small Ray actor per trial, which
sees the raylet's environment, not the driver's; so what the driver's environment says (``WANDB_DIR``) is passed on
explicitly.
"""

from __future__ import annotations

import os

from ray.tune import Callback

from isp_search import quiet
from isp_search.errors import UserError
from isp_search.search.experiment import Experiment
from isp_search.search.space import MlflowCfg, SearchSpace, WandbCfg
from isp_search.search.space_file import absolute_path

EXPERIMENT_TAG = "isp_search.experiment"  # on every MLflow run: the study's experiment name (the leaderboard's)
STUDY_TAG = "optuna.study"  # and the Optuna study it belongs to


def tracking_callbacks(space: SearchSpace, exp: Experiment) -> list[Callback]:
    """The Ray Tune logger callbacks ``space.tracking`` asks for (none when the section is absent)."""
    set_tracking_environment(space)
    out: list[Callback] = []
    if space.tracking.mlflow.enabled:
        out.append(mlflow_callback(space.tracking.mlflow, exp))
    if space.tracking.wandb.enabled:
        out.append(wandb_callback(space.tracking.wandb, space, exp))
    return out


def set_tracking_environment(space: SearchSpace) -> None:
    """What the loggers read from the driver's environment. Also needed by a resumed search, whose Tuner brings back
    its pickled callbacks (Ray's ``Tuner.restore`` takes no new ones)."""
    m, w = space.tracking.mlflow, space.tracking.wandb
    if m.enabled and (str(m.tracking_uri).startswith("file:") or ":" not in str(m.tracking_uri)):  # a file store
        # MLflow 3 refuses its file store unless asked; a space naming one asks for it (no server to run)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if w.enabled and w.mode == "offline":
        os.environ["WANDB_MODE"] = "offline"  # Ray's callback asks for an API key unless the environment says this


def mlflow_tracking_uri(uri: str) -> str:
    """A URI stays; a bare local path becomes absolute (trials and ``ray job submit`` change the working folder)."""
    return uri if ":" in uri else absolute_path(uri)


def mlflow_callback(cfg: MlflowCfg, exp: Experiment) -> Callback:
    """Ray's ``MLflowLoggerCallback``: one run per trial in ``cfg.experiment`` (default: the experiment name)."""
    uri = mlflow_tracking_uri(str(cfg.tracking_uri))
    # deferred: the integration imports mlflow (seconds); most studies do not track
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=cfg.experiment or exp.name,
                                tags={EXPERIMENT_TAG: exp.name, STUDY_TAG: exp.study_name})


def wandb_dir(cfg: WandbCfg, space: SearchSpace, exp: Experiment) -> str | None:
    """Where the trials' ``wandb/`` folder goes: ``cfg.dir``, else ``$WANDB_DIR``, else the experiment folder
    (None for object-store storage: W&B's default, the trial's folder, which Ray copies to the storage)."""
    chosen = cfg.dir or os.environ.get("WANDB_DIR")
    if chosen:
        return absolute_path(chosen)
    return None if "://" in space.storage.path else exp.uri


def wandb_callback(cfg: WandbCfg, space: SearchSpace, exp: Experiment) -> Callback:
    """Ray's ``WandbLoggerCallback``: one run per trial (id: the trial id) in ``cfg.group`` (default: the
    experiment name); its API key is looked up now, so a missing one is a one-line error before any trial."""
    # deferred: the integration imports wandb (seconds); most studies do not track
    from ray.air.integrations.wandb import WandbLoggerCallback

    init = {"mode": cfg.mode, "tags": [exp.name],
            "reinit": "finish_previous",  # what Ray's reinit=True means, without wandb's deprecation warning
            "settings": {"silent": quiet.enabled()}}
    folder = wandb_dir(cfg, space, exp)
    if folder:
        os.makedirs(folder, exist_ok=True)  # wandb falls back to a temp folder when dir is missing
        init["dir"] = folder
    callback = WandbLoggerCallback(project=cfg.project, group=cfg.group or exp.name, **init)
    try:
        callback.setup()  # what Tune calls first: finds the API key (online mode) without the network
    except ValueError:
        raise UserError(f"{space.source}: tracking.wandb.mode: online needs a W&B API key (WANDB_API_KEY or "
                        "`wandb login`); or use mode: offline and `wandb sync` the runs later") from None
    return callback
