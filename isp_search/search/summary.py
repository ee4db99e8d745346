"""The study's closing table: the Pareto front, what was exported, failures and where everything is."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from isp_search.search.experiment import Experiment
from isp_search.search.pareto import PostSummary
from isp_search.search.reconcile import FAIL_ATTR, RAY_TRIAL_ATTR, final_trials
from isp_search.search.space import SearchSpace


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
