"""Reading a search-space YAML file into a :class:`~isp_search.search.space.SearchSpace`.

Beyond the per-section checks of :mod:`isp_search.configio` (types, ranges, unknown keys), the parser checks what
spans sections: parameter kinds and ``when:`` conditions, objectives against the metric registry, points to
evaluate against the parameters, and the files a space names (resolved against the YAML's folder).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from isp_search.configio import ConfigError, NearestSource, Source, build, load_yaml
from isp_search.search.space import (
    CHOICE_TYPES,
    Objective,
    Param,
    PretrainCfg,
    SearchSpace,
    metric_direction,
)


def _check_param(name: str, p: Param, src: Source, earlier: dict[str, Param]) -> None:
    def fail(msg: str, key: str = "") -> ConfigError:
        dotted = f"space.{name}" + (f".{key}" if key else "")
        return ConfigError(f"{src.where(dotted)}: {dotted}: {msg}")

    if p.type == "categorical":
        if not p.choices:
            raise fail("categorical needs a non-empty list 'choices'", "choices")
        for k in ("low", "high", "step"):
            if getattr(p, k) is not None:
                raise fail(f"'{k}' is for float/int; categorical takes only 'choices'", k)
        if any(not isinstance(c, CHOICE_TYPES) for c in p.choices):
            raise fail("choices must be numbers, strings, booleans or null", "choices")
    else:
        if p.choices is not None:
            raise fail(f"'choices' is for categorical; {p.type} takes low/high", "choices")
        if p.low is None or p.high is None:
            raise fail(f"{p.type} needs 'low' and 'high'", "low" if p.low is None else "high")
        if not (math.isfinite(p.low) and math.isfinite(p.high)) or p.low > p.high:
            raise fail(f"expected low <= high, got low={p.low}, high={p.high}", "high")
        if p.log and p.low <= 0:
            raise fail(f"log scale needs low > 0, got {p.low}", "low")
        if p.log and p.step is not None:
            raise fail("'step' and 'log: true' cannot be combined (Optuna)", "step")
        if p.type == "int" and any(v is not None and float(v) != int(v) for v in (p.low, p.high, p.step)):
            raise fail("int parameters need integer low/high/step", "low")
    for other, value in (p.when or {}).items():
        if other not in earlier:
            raise fail(f"condition on {other!r}, which is not a parameter defined above; defined: "
                       f"{', '.join(earlier) or '(none)'}", f"when.{other}")
        allowed = value if isinstance(value, list) else [value]
        ref = earlier[other]
        if ref.type == "categorical" and any(v not in ref.choices for v in allowed):
            raise fail(f"{value!r} is not among the choices of {other}: {list(ref.choices)}", f"when.{other}")


def absolute_path(path: str) -> str:
    """URIs stay; local paths become absolute against the working directory (trials change theirs)."""
    if "://" in path:
        return path
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (Path.cwd() / p).resolve())


def parse_space(data: Any, src: Source, yaml_dir: Path | None = None) -> SearchSpace:
    """Validate a loaded search-space mapping; relative base config paths are resolved against ``yaml_dir``."""
    src = NearestSource(src.file, src.lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{src.file}: expected a mapping with sections base, space, objectives, search, ...")
    raw = dict(data)
    params_raw = raw.pop("space", None) or {}
    objectives_raw = raw.pop("objectives", None)
    for internal in ("source", "command_line"):  # filled in by the program, not the file
        if internal in raw:
            raise ConfigError(f"{src.where(internal)}: unknown key {internal}")
    cfg = build(SearchSpace, raw, src)
    if not isinstance(params_raw, dict):
        raise ConfigError(f"{src.where('space')}: space: expected a mapping of dotted config key -> parameter")
    if not params_raw:
        raise ConfigError(f"{src.where('space')}: space: no parameters to tune")
    params: dict[str, Param] = {}
    for name, spec in params_raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{src.where('space.' + str(name))}: space.{name}: expected a mapping with 'type'")
        if "type" not in spec:
            raise ConfigError(f"{src.where('space.' + str(name))}: space.{name}: missing 'type' "
                              "(float, int or categorical)")
        p = build(Param, spec, src, prefix=f"space.{name}.")
        _check_param(str(name), p, src, params)
        params[str(name)] = p
    objectives = _parse_objectives(objectives_raw, src)
    base = cfg.base
    if isinstance(base.config, str):
        path = Path(os.path.expanduser(base.config))
        if not path.is_absolute():
            path = (yaml_dir or Path.cwd()) / path
        if not path.is_file():
            raise ConfigError(f"{src.where('base.config')}: base.config: no such file {path}")
        base = replace(base, config=str(path.resolve()))
    elif base.config is not None and not isinstance(base.config, dict):
        raise ConfigError(f"{src.where('base.config')}: base.config: expected a file path or a mapping")
    elif base.config is None:
        raise ConfigError(f"{src.where('base')}: base.config: missing (a training config path or mapping)")
    for i, point in enumerate(cfg.search.points_to_evaluate):
        unknown = [k for k in point if k not in params]
        if unknown:
            raise ConfigError(f"{src.where('search.points_to_evaluate')}: search.points_to_evaluate[{i}]: "
                              f"unknown parameter {unknown[0]!r}; parameters: {', '.join(params)}")
    pretrain = _parse_pretrain(cfg.pretrain, src, yaml_dir)
    storage = replace(cfg.storage, path=absolute_path(cfg.storage.path))
    if storage.optuna and "://" not in storage.optuna:
        storage = replace(storage, optuna=absolute_path(storage.optuna))
    export = replace(cfg.export, results=absolute_path(cfg.export.results))
    if "://" in export.results:
        raise ConfigError(f"{src.where('export.results')}: export.results: expected a local folder, got "
                          f"{export.results!r}")
    name = cfg.name or Path(src.file).stem
    space = replace(cfg, name=name, base=base, space=params, objectives=objectives, storage=storage, export=export,
                    pretrain=pretrain,
                    source=str(Path(src.file).resolve()) if os.path.exists(src.file) else src.file)
    if space.scheduler_type == "moasha" and len(objectives) < 2:
        raise ConfigError(f"{src.where('scheduler.type')}: scheduler.type: moasha ranks trials on two or more "
                          f"objectives, this space has one ({objectives[0].metric}); use asha")
    return replace(space, scheduler=replace(space.scheduler, type=space.scheduler_type))  # auto resolved


def _parse_pretrain(p: PretrainCfg, src: Source, yaml_dir: Path | None) -> PretrainCfg:
    """``pretrain.config`` must exist (resolved against the space YAML); ``init_from`` is the other way."""
    if p.config and p.init_from:
        raise ConfigError(f"{src.where('pretrain')}: pretrain: give either config (a run to train) or init_from "
                          "(an existing run), not both")
    if p.overrides and not p.config:
        raise ConfigError(f"{src.where('pretrain.overrides')}: pretrain.overrides: apply to pretrain.config, "
                          "which is not set")
    if p.config:
        path = Path(os.path.expanduser(p.config))
        path = path if path.is_absolute() else (yaml_dir or Path.cwd()) / path
        if not path.is_file():
            raise ConfigError(f"{src.where('pretrain.config')}: pretrain.config: no such file {path}")
        p = replace(p, config=str(path.resolve()))
    if p.init_from and "://" not in p.init_from:
        path = Path(os.path.expanduser(p.init_from))
        p = replace(p, init_from=str(path if path.is_absolute() else ((yaml_dir or Path.cwd()) / path).resolve()))
    return p


def _parse_objectives(raw: Any, src: Source) -> tuple[Objective, ...]:
    if raw is None:
        raw = [{"metric": "lpips"}, {"metric": "psnr"}]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{src.where('objectives')}: objectives: expected a non-empty list of "
                          "{metric, direction}")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        key = f"objectives[{i}]"
        if isinstance(item, str):
            item = {"metric": item}
        o = build(Objective, item, src, prefix=key + ".")
        try:
            declared = metric_direction(o.metric)
        except ImportError:
            raise
        except Exception as e:  # an unknown metric name: the registry's message lists the valid ones
            raise ConfigError(f"{src.where(key)}: {key}.metric: {e}") from None
        out.append(replace(o, direction=o.direction or declared))
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{src.where('objectives')}: objectives: metric listed twice in {names}")
    return tuple(out)


def load_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    data, src = load_yaml(path)
    return parse_space(data, src, Path(path).resolve().parent)


