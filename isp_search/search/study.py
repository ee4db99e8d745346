"""A study is one command: preflight -> prepare -> pretrain -> search -> confirm -> export, each stage skipped when its
result is already there, so ``--resume`` after a kill at any point carries on where the study stopped.

* **preflight** (driver, before any GPU is asked for): every problem of the space, one line each
  (:mod:`isp_search.search.preflight`).
* **prepare**: every reference store a trial or the pretrain run can read, built once as Ray tasks over the
  cluster's CPUs (:mod:`isp_search.search.prepare`); ``<exp>/prepare.json`` lists them with build times.
* **nodes**: every node that can take a trial checks, on itself, the storage, data, weights and those caches
  (:mod:`isp_search.search.nodes`); a failing node stops the study, or is left out with ``--skip-bad-nodes``.
* **pretrain**: the run every trial starts from, one GPU task, reused when it completed
  (:mod:`isp_search.search.pretrain`); ``<exp>/pretrain.json`` records it.
* **search**: Ray Tune + Optuna (:mod:`isp_search.search.tuner`); a resumed study first puts Ray's saved state
  and the Optuna study in step (:mod:`isp_search.search.resume`).
* **confirm**: the trials about to be exported and the default point trained again with ``confirm.seeds`` more
  seeds, as Ray tasks (:mod:`isp_search.search.confirm`); their means decide the export.
* **export**: the Pareto-optimal trials exported, gated, timed and added to the leaderboard
  (:mod:`isp_search.search.export_stage`), then the closing table.

Every stage works on one :class:`~isp_search.search.context.StudyContext`; the tests' kill points are in
:mod:`isp_search.search.faults`.
"""

from __future__ import annotations

import time

from ray import tune

from isp_search.errors import UserError
from isp_search.search.cluster import connect
from isp_search.search.confirm import confirm_stage
from isp_search.search.context import StudyContext, open_study
from isp_search.search.experiment import write_meta
from isp_search.search.export_stage import export_stage
from isp_search.search.nodes import check_nodes
from isp_search.search.pareto import PostSummary
from isp_search.search.preflight import preflight
from isp_search.search.prepare import prepare_stage
from isp_search.search.pretrain import pretrain_stage
from isp_search.search.resume import prepare_resume
from isp_search.search.space import SearchSpace
from isp_search.search.summary import format_summary
from isp_search.search.timeline import RECORD as TIMELINE
from isp_search.search.timeline import timed
from isp_search.search.tuner import fit


def run_study(space: SearchSpace, name: str | None = None, resume: bool = False, address: str | None = None,
              smoke: bool = False, skip_bad_nodes: bool = False) -> PostSummary:
    """Every stage in order; prints the closing table and returns the summary behind it."""
    start = time.time()
    ctx = open_study(space, name=name, resume=resume, smoke=smoke)  # the base config is loaded here, once
    connect(address)
    preflight(ctx)  # connected first, so resources are checked against the cluster; nothing written yet
    if not resume:
        write_meta(ctx.exp, ctx.space)
    uri = ctx.exp.uri
    with timed(uri, "prepare"):
        prepare_stage(ctx)
    with timed(uri, "nodes"):
        ctx = check_nodes(ctx, skip_bad=skip_bad_nodes)  # on every node that can take a trial, after the caches
    with timed(uri, "pretrain"):
        ctx = pretrain_stage(ctx)
    with timed(uri, "search"):
        results = search_stage(ctx)
    with timed(uri, "confirm"):
        confirmed = confirm_stage(ctx)
    with timed(uri, "export"):
        summary = export_stage(ctx, results, confirmed)
    print(format_summary(summary, ctx.space, ctx.exp))
    print(f"study {ctx.exp.name}: {time.time() - start:.0f} s in all (stage times: {TIMELINE})", flush=True)
    return summary


def search_stage(ctx: StudyContext) -> tune.ResultGrid:
    """Run (or, resumed, continue) the trials."""
    restoring = ctx.resume and tune.Tuner.can_restore(ctx.exp.uri)
    results = fit(ctx, recorded=prepare_resume(ctx.exp, ctx.space) if restoring else None)
    # Ray Tune answers Ctrl-C (SIGINT) by saving its state, stopping the running trials and returning: fewer trials
    # than num_samples were made (or some never ended). The study stops here, not in the next stage.
    ended = results.num_terminated + results.num_errors
    wanted = ctx.space.search.num_samples
    if len(results) < wanted or ended < len(results):
        raise SearchInterrupted(f"search interrupted after {len(results)} of {wanted} trials; its state is saved: "
                                f"the same command with --resume --name {ctx.exp.name} carries on")
    return results


class SearchInterrupted(UserError):
    """The search stopped before every trial ended (Ctrl-C); exit status 130, as for an interrupt."""

    exit_code = 130
