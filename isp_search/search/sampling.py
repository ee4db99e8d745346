"""Sampling a search space: the Optuna define-by-run function and the config overrides of sampled values.

Parameters are sampled in YAML order; ``when:`` skips a parameter unless the earlier ones it names match.
"""

from __future__ import annotations

import functools
from typing import Any

from isp_search.search.space import Param, SearchSpace


def _condition_holds(p: Param, sampled: dict[str, Any]) -> bool:
    for other, value in (p.when or {}).items():
        allowed = value if isinstance(value, list) else [value]
        if other not in sampled or sampled[other] not in allowed:
            return False
    return True


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Sample every active parameter of ``space`` from an Optuna trial; returns dotted key -> value."""
    sampled: dict[str, Any] = {}
    for name, p in space.space.items():
        if not _condition_holds(p, sampled):
            continue
        if p.type == "categorical":
            sampled[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.type == "int":
            sampled[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            sampled[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return sampled


def to_overrides(space: SearchSpace, sampled: dict[str, Any]) -> dict[str, Any]:
    """Config overrides for sampled values: each parameter's own key plus its ``also`` keys."""
    out: dict[str, Any] = {}
    for name, value in sampled.items():
        out[name] = value
        p = space.space.get(name)
        for key in p.also if p else ():
            out[key] = value
    return out


def define_space(trial: Any, space: SearchSpace) -> None:
    """Define-by-run body for ``OptunaSearch``: the sampled values are captured from the ``suggest_*`` calls."""
    suggest(trial, space)


def define_by_run(space: SearchSpace):
    """A one-argument define-by-run function for ``OptunaSearch(space=...)``; picklable (a partial)."""
    return functools.partial(define_space, space=space)
