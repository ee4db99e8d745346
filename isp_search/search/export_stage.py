"""The export stage: the Pareto-optimal trials exported, gated, timed and added to the leaderboard.

Up to ``export.top_k`` trials spread along the front (:mod:`isp_search.search.pareto`) are exported at
``export.deploy_size`` (with a gate-only export at ``export.gate_size``) through
:func:`isp_search.export.publish.publish` on the targets of ``export.latency_targets`` (cpu always; adb[:SERIAL] /
qai-hub:DEVICE time the fp16 file on a phone), which appends one row each with the search and trial ids; a refused
model gets none. With a latency target the exported trials are then ranked on LPIPS x PSNR x latency: a trial
dominated once latency counts says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

# torch's flop counter (MACs in the leaderboard row) imports triton, which segfaults when TensorFlow/LiteRT is
# already loaded in the process; importing it first avoids that.
import torch.utils.flop_counter  # noqa: F401

from isp_search.errors import UserError
from isp_search.export import leaderboard as LB
from isp_search.export.publish import publish
from isp_search.export.report import DEFAULT_OBJECTIVES, write_report
from isp_search.export.settings import Provenance
from isp_search.search.baselines import Baseline, default_baseline, default_point, start_baseline
from isp_search.search.confirm import Confirmed
from isp_search.search.context import StudyContext
from isp_search.search.optuna_storage import load_study
from isp_search.search.pareto import ParetoEntry, PostSummary, close_orphans, export_choice, pareto_trials, spread
from isp_search.search.plots import save_plots
from isp_search.search.reconcile import FINAL_ATTR, RAY_TRIAL_ATTR
from isp_search.search.space import SearchSpace, metric_direction

log = logging.getLogger(__name__)


def _model_file(folder: Path) -> Path | None:
    for name in ("last.pt", "best.pt"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.rglob("*.pt"))
    return found[0] if found else None


def publish_trial(entry: ParetoEntry, result: Any, ctx: StudyContext) -> None:
    """Export, gate and benchmark one Pareto trial from its best Ray checkpoint; append its leaderboard row
    (once: a trial already on the leaderboard, e.g. exported before a ``--resume``, is not added again)."""
    exp = ctx.exp
    entry.model_id = f"{exp.name}/{entry.trial_id}"  # the row's key
    if _on_board(entry.model_id, ctx):
        entry.note = "already on the leaderboard (not added again)"
        return
    base = str(ctx.space.base.config) if not isinstance(ctx.space.base.config, dict) else "inline"
    provenance = Provenance(kind="search", model_id=entry.model_id, search_id=exp.name, trial_id=entry.trial_id,
                            mode=ctx.cfg.mode, run_dir=str(result.path) if result else None,
                            config={**entry.params, "base": base})
    _publish_checkpoint(entry, result, provenance, f"trial_{entry.trial_id}", ctx)


def publish_baseline(b: Baseline, result: Any, ctx: StudyContext) -> None:
    """Export, gate and time a baseline like any model: a leaderboard row with ``kind: baseline``."""
    exp = ctx.exp
    b.model_id = f"{exp.name}/baseline-{b.name}"
    if _on_board(b.model_id, ctx):
        b.note = _join(b.note, "already on the leaderboard")
        b.exported = True
        _latency_from_board(b, ctx)
        return
    base = str(ctx.space.base.config) if not isinstance(ctx.space.base.config, dict) else "inline"
    config = {"baseline": b.name, "base": base}
    if b.name == "default":
        config.update(default_point(ctx.space) or {})
    provenance = Provenance(kind="baseline", model_id=b.model_id, search_id=exp.name, trial_id=b.trial_id or None,
                            mode=ctx.cfg.mode, run_dir=b.source if b.name == "start" else
                            (str(result.path) if result else None), config=config)
    if b.name == "start" and not (b.val or b.test):
        return  # not measured (its note says why): nothing to stand beside the searched models
    if b.name == "start":
        metrics = {**b.test, "split": "test"} if b.test else {**b.val, "split": "val"}
        res = publish(b.source, Path(ctx.space.export.results) / exp.name / "exports" / "baseline_start",
                      ctx.space.export.settings, provenance, data=ctx.data, metrics=metrics,
                      leaderboard_path=_board(ctx))
        _record(b, res)
    else:
        _publish_checkpoint(b, result, provenance, "baseline_default", ctx)
    if b.duplicate_of:
        _latency_from_board(b, ctx)


def _publish_checkpoint(entry: ParetoEntry | Baseline, result: Any, provenance: Provenance, folder: str,
                        ctx: StudyContext) -> None:
    """A trial's best Ray checkpoint exported under ``<results>/<exp>/exports/<folder>``."""
    space = ctx.space
    ckpt = result.get_best_checkpoint(space.scheduler.metric, ctx.score_mode) if result else None
    if ckpt is None:
        entry.note = _join(entry.note, "no checkpoint")
        return
    final = result.metrics or {}
    test = {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("test/")}
    metrics = test or {**{m: final.get(m) for m in ("psnr", "ssim", "lpips")}, "split": "val"}
    with ckpt.as_directory() as checkpoint_dir:
        model = _model_file(Path(checkpoint_dir))
        if model is None:
            entry.note = _join(entry.note, f"no .pt file in {ckpt.path}")
            return
        res = publish(model, Path(space.export.results) / ctx.exp.name / "exports" / folder, space.export.settings,
                      provenance, data=ctx.data, metrics=metrics, leaderboard_path=_board(ctx),
                      seeds=seed_stats(entry.confirmed))
    _record(entry, res)


def seed_stats(c: Confirmed | None) -> dict[str, Any] | None:
    """The leaderboard's seed columns of a confirmed configuration (None: one run)."""
    return None if c is None else {"n": c.n, "mean": dict(c.mean), "sd": dict(c.sd)}


def _record(entry: ParetoEntry | Baseline, res: Any) -> None:
    entry.model_id = res.model_id
    entry.exported = res.row is not None
    if res.duplicate_of:
        entry.duplicate_of = res.duplicate_of
        entry.note = _join(entry.note, f"same weights as {res.duplicate_of} (its row names this one too)")
        return
    if res.row is None:
        entry.note = _join(entry.note, f"export refused: {res.export.reason}")
        return
    entry.latency_ms = res.row.get("latency_ms")
    entry.latency_target = res.row.get("latency_target")


def _board(ctx: StudyContext) -> Path:
    return Path(ctx.space.export.results) / "leaderboard.parquet"


def _on_board(model_id: str, ctx: StudyContext) -> bool:
    board = _board(ctx)
    return board.exists() and model_id in LB.read(board).column("model_id").to_pylist()


def _latency_from_board(b: Baseline, ctx: StudyContext) -> None:
    """A baseline whose row exists already (same id, or same weights): its latency from that row."""
    key = b.duplicate_of or b.model_id
    for row in LB.read(_board(ctx)).to_pylist():
        if row["model_id"] == key:
            b.latency_ms, b.latency_target = row.get("latency_ms"), row.get("latency_target")


def _join(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def latency_note(entry: ParetoEntry, space: SearchSpace) -> None:
    """Whether an exported trial meets its latency target (``export.latency_targets``)."""
    target = space.export.latency_targets.get(entry.latency_target or "cpu")
    if target is not None and entry.latency_ms is not None:
        entry.note = _join(entry.note, f"{'meets' if entry.latency_ms <= target else 'misses'} the {target:g} ms "
                                       "target")


def rank_with_latency(entries: list[ParetoEntry], space: SearchSpace) -> None:
    """Among the exported trials, flag those dominated once their measured latency joins LPIPS and PSNR."""
    done = [e for e in entries if e.exported and e.latency_ms is not None]
    objectives = {o.metric: o.direction or "min" for o in space.objectives}
    objectives["latency_ms"] = "min"
    rows = [{**e.values, "latency_ms": e.latency_ms} for e in done]
    for e, on in zip(done, LB.pareto_front(rows, objectives)):
        if not on:
            e.note = (e.note + "; " if e.note else "") + "dominated on " + " x ".join(objectives)


def write_html(space: SearchSpace) -> tuple[Path, Path]:
    """The leaderboard's HTML report next to its Parquet file."""
    path = Path(space.export.results) / "leaderboard.parquet"
    rows = LB.read(path).to_pylist()

    def direction(col: str) -> str:
        try:
            return metric_direction(col)
        except UserError:  # latency and size columns are not metrics
            return "min"

    front = LB.pareto_front(rows, {k: direction(k) for k in DEFAULT_OBJECTIVES})
    return path, write_report(rows, front, path.with_suffix(".html"))


def dominated_on_means(confirmed: list[Confirmed], space: SearchSpace) -> set[int]:
    """Trial numbers among ``confirmed`` that another dominates on the mean val objectives."""
    keys = {f"val/{o.metric}": o.direction or "min" for o in space.objectives}
    rows = [{k: c.mean.get(k) for k in keys} for c in confirmed]
    return {c.number for c, on in zip(confirmed, LB.pareto_front(rows, keys)) if not on}


def _guarded(fn: Any, entry: ParetoEntry | Baseline, result: Any, ctx: StudyContext) -> None:
    """One model failing to export must not lose the others' rows: its failure becomes its note."""
    try:
        fn(entry, result, ctx)
    except Exception as e:  # one line in the closing table (STYLE rule 11); the rest of the export goes on
        entry.note = _join(entry.note, f"export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def export_stage(ctx: StudyContext, results: Any, confirmed: dict[int, Confirmed] | None = None) -> PostSummary:
    """Everything after the search; ``results`` is its ResultGrid (None: study only, nothing exported) and
    ``confirmed`` the confirmation stage's values over seeds (Optuna trial number -> Confirmed)."""
    space = ctx.space
    study = load_study(ctx.exp.study_name, ctx.exp.optuna_storage)
    by_id = {}
    for r in results or []:
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name.removeprefix("trial_")
        by_id[tid] = r
    closed = close_orphans(study, set(by_id))
    if closed:
        log.warning("marked %d orphaned Optuna trial(s) FAIL", closed)
    summary = PostSummary(study, plots=save_plots(study, space, Path(space.export.results) / ctx.exp.name / "plots"))
    confirmed = confirmed or {}
    by_rid = {c.trial_id: c for c in confirmed.values()}
    summary.baselines = [b for b in (start_baseline(ctx), default_baseline(study, space)) if b is not None]
    for b in summary.baselines:
        b.confirmed = by_rid.get(b.trial_id) if b.trial_id else None
    for b in summary.baselines if results is not None else ():  # first: a trial with the same weights says so
        _guarded(publish_baseline, b, by_id.get(b.trial_id), ctx)
    front = pareto_trials(study, space)
    chosen = set(spread(len(front), space.export.top_k))
    dominated = dominated_on_means([confirmed[t.number] for t in export_choice(study, space) if t.number in confirmed],
                                   space)
    for rank, t in enumerate(front):
        final = t.user_attrs.get(FINAL_ATTR) or {}
        entry = ParetoEntry(t.number, str(t.user_attrs.get(RAY_TRIAL_ATTR, "")),
                            dict(zip(space.metric_names, t.values)), dict(t.params),
                            test={k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("test/")},
                            confirmed=confirmed.get(t.number))
        if rank not in chosen:
            entry.note = f"not exported (top_k={space.export.top_k} spread along the front)"
        elif final.get("best_step") == 0:
            entry.note = "never beat its start (best evaluation at step 0): not exported as a new model"
        elif t.number in dominated:
            entry.note = "dominated once its seeds are averaged: not exported"
        elif results is not None:
            _guarded(publish_trial, entry, by_id.get(entry.trial_id), ctx)
            latency_note(entry, space)
        summary.pareto.append(entry)
    if space.export.latency_targets:
        rank_with_latency(summary.pareto, space)
    if results is not None:
        summary.leaderboard, summary.report = write_html(space)
    return summary
