"""After the search: close the study, export the Pareto-optimal trials to the leaderboard, save the plots.

The Pareto front comes from the Optuna study (only COMPLETE trials, so ASHA-pruned and failed ones never enter
it). Up to ``export.top_k`` of its trials, spread evenly along it (both ends and between, not one end), are
exported at ``export.bench_size``, gated and timed through :func:`isp_search.export.publish.publish` on the
targets of ``export.latency_targets`` (cpu always; adb[:SERIAL] / qai-hub:DEVICE time the fp16 file on a phone),
which appends one row each with the search and trial ids; a refused model gets none. With a latency target the
exported trials are then ranked on LPIPS x PSNR x latency: a trial dominated once latency counts says so.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from isp_search.search.reconcile import final_trials
from isp_search.search.searcher import FAIL_ATTR, RAY_TRIAL_ATTR, load_study
from isp_search.search.space import SearchSpace
from isp_search.search.tuner import Experiment

log = logging.getLogger(__name__)


@dataclass
class ParetoEntry:
    number: int
    trial_id: str
    values: dict[str, float]
    params: dict[str, Any]
    exported: bool = False
    note: str = ""
    latency_ms: float | None = None
    model_id: str = ""
    latency_target: str | None = None


@dataclass
class PostSummary:
    study: optuna.Study
    pareto: list[ParetoEntry] = field(default_factory=list)
    leaderboard: Path | None = None
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)


def close_orphans(study: optuna.Study, ray_trial_ids: set[str]) -> int:
    """Mark FAIL the Optuna trials left RUNNING with no finished Ray trial (asked just before a driver died)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.user_attrs.get(RAY_TRIAL_ATTR) in ray_trial_ids and t.state == TrialState.RUNNING:
            reason = "the Ray trial ended without a final result"
        else:
            reason = "orphaned: the driver stopped before Ray recorded this trial"
        # Trial(study, id) is Optuna's handle for a live trial; it is how user attributes are written.
        optuna.trial.Trial(study, t._trial_id).set_user_attr(FAIL_ATTR, reason)
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    return n


def pareto_trials(study: optuna.Study, space: SearchSpace) -> list[optuna.trial.FrozenTrial]:
    """Pareto-optimal COMPLETE trials, ordered by the first objective (best first)."""
    best = study.best_trials if len(space.objectives) > 1 else ([study.best_trial] if _n_complete(study) else [])
    sign = 1 if space.objectives[0].direction == "min" else -1
    return sorted(best, key=lambda t: sign * t.values[0])


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``0..n-1`` (both ends included): the trials exported from a front of n."""
    if k <= 0:
        return []
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def save_plots(study: optuna.Study, space: SearchSpace, out: Path) -> list[Path]:
    """Pareto front and per-objective parameter importances as PNG (Optuna's matplotlib backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    out.mkdir(parents=True, exist_ok=True)
    names = space.metric_names
    plots: list[Path] = []
    if _n_complete(study) == 0:
        return plots

    def save(ax: Any, name: str) -> None:
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        plots.append(out / name)

    if 2 <= len(names) <= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save(vis.plot_pareto_front(study, target_names=names), "pareto_front.png")
    for i, o in enumerate(space.objectives):
        # Optuna's default evaluator (PED-ANOVA) ranks what drives a *low* target: flip maximised objectives.
        sign = 1.0 if o.direction == "min" else -1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = vis.plot_param_importances(study, target=(lambda t, i=i, s=sign: s * t.values[i]),
                                                target_name=o.metric if sign > 0 else f"-{o.metric}")
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials or no variation yet
            log.warning("no parameter importances for %s: %s", o.metric, e)
            continue
        save(ax, f"param_importances_{o.metric}.png")
    return plots


def _model_file(folder: Path) -> Path | None:
    for name in ("last.pt", "best.pt"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.rglob("*.pt"))
    return found[0] if found else None


def publish_trial(entry: ParetoEntry, result: Any, space: SearchSpace, exp: Experiment, score_mode: str,
                  data: tuple[str, str] | None, mode: str | None) -> None:
    """Export, gate and benchmark one Pareto trial from its best Ray checkpoint; append its leaderboard row
    (once: a trial already on the leaderboard, e.g. exported before a ``--resume``, is not added again)."""
    from isp_search.export import leaderboard as LB
    from isp_search.export.publish import publish

    model_id = f"{exp.name}/{entry.trial_id}"  # the row's key
    board = Path(space.export.results) / "leaderboard.parquet"
    if board.exists() and model_id in LB.read(board).column("model_id").to_pylist():
        entry.model_id, entry.note = model_id, "already on the leaderboard (not added again)"
        return
    ckpt = result.get_best_checkpoint(space.scheduler.metric, score_mode) if result else None
    if ckpt is None:
        entry.note = "no checkpoint"
        return
    final = result.metrics or {}
    test = {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("test/")}
    metrics = test or {**{m: final.get(m) for m in ("psnr", "ssim", "lpips")}, "split": "val"}
    with ckpt.as_directory() as folder:
        model = _model_file(Path(folder))
        if model is None:
            entry.note = f"no .pt file in {ckpt.path}"
            return
        targets = [t for t in space.export.latency_targets if t != "cpu"]
        res = publish(
            model, Path(space.export.results) / exp.name / "exports" / f"trial_{entry.trial_id}",
            formats=space.export.formats, size=tuple(space.export.bench_size), gate_size=tuple(space.export.size),
            targets=targets, adb={"benchmark_binary": space.export.benchmark_binary or None, "runs": space.export.runs},
            data=data, metrics=metrics, kind="search", mode=mode,
            search_id=exp.name, trial_id=entry.trial_id, config={**entry.params, "base": str(space.base.config)
                                                                  if not isinstance(space.base.config, dict)
                                                                  else "inline"},
            run_dir=str(result.path), bench_runs=space.export.runs, threads=space.export.threads,
            leaderboard_path=board, model_id=model_id,
        )
    entry.model_id = res.model_id
    entry.exported = res.row is not None
    if res.row is None:
        entry.note = f"export refused: {res.export.reason}"
        return
    entry.latency_ms = res.row.get("latency_ms")
    entry.latency_target = res.row.get("latency_target")
    target = space.export.latency_targets.get(entry.latency_target or "cpu")
    if target is not None and entry.latency_ms is not None:
        entry.note = f"{'meets' if entry.latency_ms <= target else 'misses'} the {target:g} ms target"


def rank_with_latency(entries: list[ParetoEntry], space: SearchSpace) -> None:
    """Among the exported trials, flag those dominated once their measured latency joins LPIPS and PSNR."""
    from isp_search.export.leaderboard import pareto_front

    done = [e for e in entries if e.exported and e.latency_ms is not None]
    objectives = {o.metric: o.direction or "min" for o in space.objectives}
    objectives["latency_ms"] = "min"
    rows = [{**e.values, "latency_ms": e.latency_ms} for e in done]
    for e, on in zip(done, pareto_front(rows, objectives)):
        if not on:
            e.note = (e.note + "; " if e.note else "") + "dominated on " + " x ".join(objectives)


def write_html(space: SearchSpace) -> tuple[Path, Path]:
    """The leaderboard's HTML report next to its Parquet file."""
    from isp_search.export import leaderboard as LB
    from isp_search.export.report import DEFAULT_OBJECTIVES, write_report
    from isp_search.search.space import metric_direction

    path = Path(space.export.results) / "leaderboard.parquet"
    rows = LB.read(path).to_pylist()

    def direction(col: str) -> str:
        try:
            return metric_direction(col)
        except Exception:  # latency and size columns are not metrics
            return "min"

    front = LB.pareto_front(rows, {k: direction(k) for k in DEFAULT_OBJECTIVES})
    return path, write_report(rows, front, path.with_suffix(".html"))


def finish(space: SearchSpace, exp: Experiment, results: Any, score_mode: str = "max",
           data: tuple[str, str] | None = None, mode: str | None = None) -> PostSummary:
    """Everything after ``Tuner.fit()``; ``results`` is its ResultGrid (None: study only, nothing exported)."""
    # torch's flop counter (MACs in the leaderboard row) imports triton, which segfaults when TensorFlow/LiteRT
    # is already loaded in the process; importing it first avoids that.
    import torch.utils.flop_counter  # noqa: F401

    study = load_study(exp.study_name, exp.optuna_storage)
    by_id = {}
    for r in results or []:
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name.removeprefix("trial_")
        by_id[tid] = r
    closed = close_orphans(study, set(by_id))
    if closed:
        log.warning("marked %d orphaned Optuna trial(s) FAIL", closed)
    out = Path(space.export.results) / exp.name
    summary = PostSummary(study, plots=save_plots(study, space, out / "plots"))
    front = pareto_trials(study, space)
    chosen = set(spread(len(front), space.export.top_k))
    for rank, t in enumerate(front):
        entry = ParetoEntry(t.number, str(t.user_attrs.get(RAY_TRIAL_ATTR, "")), dict(zip(space.metric_names,
                                                                                        t.values)), dict(t.params))
        if rank not in chosen:
            entry.note = f"not exported (top_k={space.export.top_k} spread along the front)"
        elif results is not None:
            try:
                publish_trial(entry, by_id.get(entry.trial_id), space, exp, score_mode, data, mode)
            except Exception as e:  # one model failing to export must not lose the others' rows
                log.exception("export of trial %s failed", entry.trial_id)
                entry.note = f"export failed: {type(e).__name__}: {e}"
        summary.pareto.append(entry)
    if space.export.latency_targets:
        rank_with_latency(summary.pareto, space)
    if results is not None:
        summary.leaderboard, summary.report = write_html(space)
    return summary


def format_summary(summary: PostSummary, space: SearchSpace, exp: Experiment) -> str:
    """The Pareto table and where everything is, for the terminal."""
    states: dict[str, int] = {}
    for t in final_trials(summary.study):  # a trial re-run after an error counts once, in its final state
        states[t.state.name] = states.get(t.state.name, 0) + 1
    lines = [f"search {exp.name}: study {exp.study_name} ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})"]
    cols = ["#", "trial"] + [f"{o.metric} ({'↓' if o.direction == 'min' else '↑'})" for o in space.objectives]
    cols += ["latency ms", "leaderboard", "params"]
    rows = []
    for e in summary.pareto:
        rows.append([str(e.number), e.trial_id] + [f"{e.values[m]:.4g}" for m in space.metric_names]
                    + [f"{e.latency_ms:.3g} ({e.latency_target})" if e.latency_ms is not None else "–",
                       ("added" + (f" ({e.note})" if e.note else "")) if e.exported else (e.note or "–"),
                       ", ".join(f"{k}={_short(v)}" for k, v in e.params.items())])
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    n_exported = sum(e.exported for e in summary.pareto)
    lines.append(f"Pareto-optimal trials ({len(summary.pareto)}; {n_exported} exported of top_k="
                 f"{space.export.top_k}, spread along the front):")
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows] or ["(no COMPLETE trial)"]
    for t in final_trials(summary.study, (TrialState.FAIL,)):
        lines.append(f"failed trial #{t.number} {t.user_attrs.get(RAY_TRIAL_ATTR, '')}: "
                     f"{t.user_attrs.get(FAIL_ATTR, '?')}")
    lines.append(f"experiment: {exp.uri}")
    lines.append(f"optuna study: {exp.optuna_storage}; open it with: optuna-dashboard {exp.optuna_storage}")
    if summary.plots:
        lines.append(f"plots: {summary.plots[0].parent}")
    if summary.leaderboard:
        lines.append(f"leaderboard: {summary.leaderboard}")
        lines.append(f"report: {summary.report}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
