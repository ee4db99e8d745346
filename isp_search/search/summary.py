"""The study's closing table: the Pareto front, what was exported, failures and where everything is."""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from isp_search.search.baselines import beats, difference
from isp_search.search.confirm import beats_by
from isp_search.search.experiment import Experiment
from isp_search.search.pareto import PostSummary
from isp_search.search.reconcile import FAIL_ATTR, RAY_TRIAL_ATTR, final_trials
from isp_search.search.space import SearchSpace

WIDTH = 120  # the console's columns: tables are cut there, a job log reads like a terminal


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
                       "added" if e.exported else "not added",
                       ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in e.params.items())])
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    n_exported = sum(e.exported for e in summary.pareto)
    lines.append(f"Pareto-optimal trials ({len(summary.pareto)}; {n_exported} exported of top_k="
                 f"{space.export.top_k}, spread along the front):")
    lines.append(_fit("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()))
    lines += [_fit("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()) for r in rows] or ["(no COMPLETE trial)"]
    lines += [f"  #{e.number} {e.trial_id}: {e.note}" for e in summary.pareto if e.note]
    lines += baseline_lines(summary, space)
    lines += confirmation_lines(summary, space)
    for t in final_trials(summary.study, (TrialState.FAIL,)):
        lines.append(f"failed trial #{t.number} {t.user_attrs.get(RAY_TRIAL_ATTR, '')}: "
                     f"{t.user_attrs.get(FAIL_ATTR, '?')}")
    lines.append(f"experiment: {exp.uri}")
    lines.append(f"optuna study: {exp.optuna_storage}")
    lines.append(f"  open it with: optuna-dashboard {exp.optuna_storage}")
    if summary.plots:
        lines.append(f"plots: {summary.plots[0].parent}")
    if summary.leaderboard:
        lines.append(f"leaderboard: {summary.leaderboard}")
        lines.append(f"report: {summary.report}")
    return "\n".join(lines)


def _fit(line: str, width: int = WIDTH) -> str:
    """A table line cut to ``width`` columns (the params column is last: what is cut is named in the row)."""
    return line if len(line) <= width else line[: width - 1] + "…"


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def baseline_lines(summary: PostSummary, space: SearchSpace) -> list[str]:
    """The baselines' table, each Pareto trial's difference to them, and the verdict per objective."""
    if not summary.baselines:
        return ["baselines: none (no model.init_from and no search.points_to_evaluate)"]
    names = [o.metric for o in space.objectives]
    arrow = {o.metric: "↓" if o.direction == "min" else "↑" for o in space.objectives}
    cols = ["baseline", "source"] + [f"{split} {m} ({arrow[m]})" for split in ("val", "test") for m in names]
    cols += ["latency ms", "leaderboard"]
    rows = []
    for b in summary.baselines:
        src = b.source.rstrip("/").rsplit("/", 1)[-1] if b.name == "start" else b.source
        rows.append([b.name, src] + [_num(getattr(b, split).get(m)) for split in ("val", "test") for m in names]
                    + [f"{b.latency_ms:.3g} ({b.latency_target})" if b.latency_ms is not None else "–",
                       "added" if b.exported and not b.duplicate_of else
                       f"= {b.duplicate_of.rsplit('/', 1)[-1]}" if b.duplicate_of else "not added"])
    out = ["baselines (measured on the trials' val and test subsets with their metric networks):"]
    out += _table(cols, rows)
    out += [f"  {b.name}: {b.note}" for b in summary.baselines if b.note]
    if summary.pareto:
        out.append("Pareto trials against the baselines (trial minus baseline):")
        cols = ["#", "trial", "vs"] + [f"{split} {m}" for split in ("val", "test") for m in names]
        rows = [[str(e.number), e.trial_id, b.name] + [_delta(difference(vals, getattr(b, split), m))
                                                      for split, vals in (("val", e.values), ("test", e.test))
                                                      for m in names]
                for e in summary.pareto for b in summary.baselines]
        out += _table(cols, rows)
    out.append("did the search beat its baselines?")
    out += [f"  {part}" for part in verdict_parts(summary, space)]
    return out


def verdict(summary: PostSummary, space: SearchSpace) -> str:
    """Per objective: the best Pareto trial on val against each baseline, in words (one line)."""
    return "; ".join(verdict_parts(summary, space))


def verdict_parts(summary: PostSummary, space: SearchSpace) -> list[str]:
    """One phrase per objective: the best Pareto trial on val against each baseline."""
    parts = []
    for o in space.objectives:
        m, sign = o.metric, (1.0 if o.direction == "max" else -1.0)
        entries = [e for e in summary.pareto if isinstance(e.values.get(m), (int, float))]
        if not entries:
            parts.append(f"{m}: no COMPLETE trial")
            continue
        best = max(entries, key=lambda e: sign * e.values[m])
        said = []
        for b in summary.baselines:
            won = beats(best.values, b.val, m)
            said.append(f"{b.name} {'not measured' if won is None else 'yes' if won else 'no'}"
                        + (f" ({best.values[m]:.4g} vs {b.val[m]:.4g})" if won is not None else ""))
        parts.append(f"val {m} (best #{best.number}): " + ", ".join(said))
    return parts


def _table(cols: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()] + \
        ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "–"


def _delta(v: float | None) -> str:
    return "–" if v is None else f"{v:+.3g}"


def confirmation_lines(summary: PostSummary, space: SearchSpace) -> list[str]:
    """The confirmed configurations (mean ± sd over seeds) and, per objective, whether the best beats the default
    by more than twice the standard error of the difference."""
    shown = [(e.number, e.trial_id, "searched", e.confirmed) for e in summary.pareto if e.confirmed]
    default = next((b.confirmed for b in summary.baselines if b.name == "default" and b.confirmed), None)
    if default is not None and all(c is not default for *_, c in shown):
        shown.append((default.number, default.trial_id, "default", default))
    if not shown:
        return []
    names = [o.metric for o in space.objectives]
    keys = [f"{split}/{m}" for split in ("val", "test") for m in names]
    cols = ["#", "trial", "role", "n"] + [k.replace("/", " ") for k in keys]
    rows = [[str(num), tid, "default" if c is default else role, str(c.n)]
            + [f"{c.mean[k]:.4g} ± {c.sd[k]:.2g}" if k in c.mean else "–" for k in keys]
            for num, tid, role, c in shown]
    out = ["confirmed over seeds (mean ± sd of n training runs; the search's own run is one of them):"]
    out += _table(cols, rows)
    searched = [c for *_, c in shown if c is not default]
    if default is None or not searched:
        out.append("best against the default beyond seed noise: not measured (no confirmed default point)"
                   if default is None else "best against the default beyond seed noise: no searched model confirmed")
        return out
    out.append("does the best beat the default beyond seed noise (by more than 2 standard errors of the difference)?")
    for o in space.objectives:
        key, sign = f"val/{o.metric}", (1.0 if o.direction == "max" else -1.0)
        have = [c for c in searched if key in c.mean]
        if not have:
            out.append(f"  {key}: not measured")
            continue
        best = max(have, key=lambda c: sign * c.mean[key])
        res = beats_by(best, default, key, o.direction or "min")
        if res is None:
            out.append(f"  {key}: not measured")
            continue
        diff, se, beyond = res
        word = ("yes, beyond seed noise" if beyond else
                "better on average, but within seed noise" if sign * diff > 0 else "no, not better than the default")
        out.append(f"  {key}: {word}: #{best.number} {best.mean[key]:.4g} vs default {default.mean[key]:.4g}, "
                   f"difference {diff:+.3g} ± {se:.2g} (n={best.n}, {default.n})")
    return out
