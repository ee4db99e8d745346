"""The search stage's engine: a Ray Tune ``Tuner`` driven by the Optuna searcher, with early stopping by MOASHA
(Pareto rank on the objectives, :mod:`isp_search.search.moasha`), ASHA (on the scalar score) or none.

:func:`fit` builds the Tuner of a study (or restores the one a killed driver left) and runs it to the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import TrialScheduler

from isp_search.search.baselines import default_point
from isp_search.search.context import StudyContext
from isp_search.search.guard import DeterministicErrors, guard
from isp_search.search.keep_default import DefaultKeepingASHA, DefaultKeepingMOASHA
from isp_search.search.quarantine import NodeQuarantine, trial_resources
from isp_search.search.reporter import TrialTable
from isp_search.search.searcher import make_searcher
from isp_search.search.tracking import set_tracking_environment, tracking_callbacks
from isp_search.search.trainable import run_trial
from isp_search.search.worker_reuse import InOrder


def fit(ctx: StudyContext, recorded: dict[str, dict] | None = None,
        trial_fn: Callable[..., None] = run_trial) -> tune.ResultGrid:
    """Run the study's trials; ``recorded`` (the results to replay, :mod:`isp_search.search.resume`) restores the
    experiment's saved Tuner instead of starting a new one. ``trial_fn`` is the trial (``isp-search bench-driver``
    passes a stand-in)."""
    trainable = _trainable(ctx, recorded, trial_fn)
    if recorded is not None:
        set_tracking_environment(ctx.space)  # the restored Tuner brings back its own logger callbacks
        return tune.Tuner.restore(ctx.exp.uri, trainable=trainable, resume_errored=True).fit()
    # a fresh search, or one cut off before its first trial (during prepare or pretrain)
    space = ctx.space
    metric_columns = {m: m for m in space.metric_names} | {space.scheduler.metric: space.scheduler.metric,
                                                           "step": "step"}
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=make_searcher(space, ctx.exp.study_name, ctx.exp.optuna_storage,
                                                             ctx.exp.name),
                                    scheduler=_scheduler(ctx), num_samples=space.search.num_samples,
                                    max_concurrent_trials=space.search.max_concurrent,
                                    trial_dirname_creator=_trial_dirname,
                                    reuse_actors=True),  # a trial starts in its GPU's last worker (worker_reuse.py)
        run_config=tune.RunConfig(
            name=ctx.exp.name, storage_path=space.storage.path, verbose=1,
            progress_reporter=TrialTable(metric_columns=metric_columns, parameter_columns=list(space.space)),
            failure_config=tune.FailureConfig(max_failures=space.search.max_failures),
            callbacks=[DeterministicErrors(space.search.max_failures),  # a bad config/file fails at once
                       NodeQuarantine(space, ctx.exp.study_name),  # a node failing trials at once gets no more
                       *tracking_callbacks(space, ctx.exp)],  # MLflow / W&B (tracking:)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.scheduler.metric,
                                                    checkpoint_score_order=ctx.score_mode),
        ),
    )
    return tuner.fit()


def _scheduler(ctx: StudyContext) -> TrialScheduler | None:
    s, kind = ctx.space.scheduler, ctx.space.scheduler_type
    if kind == "none":
        return InOrder()  # no early stopping; a freed worker goes to a trial with none starting (worker_reuse.py)
    # (MO)ASHA stops a trial once training_iteration reaches max_t; the trainable's closing report is one iteration
    # after the last evaluation, and must arrive for the trial to count as COMPLETE.
    max_t = s.max_t or int(ctx.cfg.num_evaluations or 1000) + 1
    # the default point (the first of points_to_evaluate) is a baseline: it always trains the whole budget
    if kind == "moasha":
        scheduler = DefaultKeepingMOASHA(ctx.space.metric_names, ctx.space.modes, time_attr="training_iteration",
                                         max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    else:
        scheduler = DefaultKeepingASHA(time_attr="training_iteration", metric=s.metric, mode=ctx.score_mode,
                                       max_t=max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    scheduler.keep = default_point(ctx.space)
    return scheduler


def _trainable(ctx: StudyContext, recorded: dict[str, dict] | None, trial_fn: Callable[..., None] = run_trial) -> Any:
    res = ctx.space.resources
    bundle = {k: v for k, v in {"CPU": res.cpu, "GPU": res.gpu, **res.custom}.items() if v > 0}
    # made as each trial is created: off the nodes that failed the node check (--skip-bad-nodes) and those
    # quarantined so far (NodeQuarantine)
    resources = trial_resources(bundle, ctx.exp.study_name, ctx.excluded_nodes)
    # guard: trials final in Optuna replay their ``recorded`` result; errors reach Optuna with their real cause
    return tune.with_resources(tune.with_parameters(guard(trial_fn), space=ctx.space, base_cfg=ctx.cfg,
                                                    score_mode=ctx.score_mode, exp_uri=ctx.exp.uri,
                                                    recorded=recorded), resources)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
