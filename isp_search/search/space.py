"""Search-space YAML: a base training config, the tuned parameters, the objectives and how the search runs.

Every section is a frozen dataclass read through :mod:`isp_search.configio`, so an unknown key or a bad value
fails at load as one line naming the file, line and dotted key. ``define_space`` turns the ``space`` section into
an Optuna define-by-run function (parameters in YAML order; ``when:`` skips a parameter unless earlier ones match).
The schema is documented in ``search_spaces/README.md``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from isp_search.configio import ConfigError, Source, build, load_yaml

SAMPLERS = ("tpe", "gp", "nsga2", "random")
EXPORT_FORMATS = ("onnx", "tflite", "tflite_fp16", "tflite_int8")
LATENCY_METRIC = "latency_ms"
_CHOICE_TYPES = (type(None), bool, int, float, str)


def _pos(v: float) -> bool:
    return v > 0


@dataclass(frozen=True)
class Param:
    """One tuned value: a number range or a list of choices, optionally conditional on earlier parameters."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = field(default=None, metadata={"check": _pos, "valid": "a number > 0"})
    choices: tuple[Any, ...] | None = None
    when: dict[str, Any] | None = None  # {other_param: value or [values]}: sampled only when all match
    also: tuple[str, ...] = ()  # more config keys that take the same value (e.g. every optimiser's beta1)


@dataclass(frozen=True)
class Base:
    """The training config every trial starts from."""

    config: Any = None  # a path (relative to the space YAML) or an inline mapping
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, applied before the sampled ones


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str | None = field(default=None, metadata={"check": lambda v: v in ("min", "max"),
                                                          "valid": "'min' or 'max'"})  # default: declared


@dataclass(frozen=True)
class SearchCfg:
    sampler: Literal["tpe", "gp", "nsga2", "random"] = "tpe"
    seed: int = 0
    num_samples: int = field(default=16, metadata={"check": _pos, "valid": "int > 0"})
    max_concurrent: int = field(default=1, metadata={"check": _pos, "valid": "int > 0 (= number of GPUs)"})
    max_failures: int = field(default=3, metadata={"check": lambda v: v >= -1, "valid": "int >= -1"})
    points_to_evaluate: tuple[dict[str, Any], ...] = ()  # tried first, in order (the paper's defaults)


@dataclass(frozen=True)
class SchedulerCfg:
    type: Literal["asha", "none"] = "asha"
    metric: str = "score"
    mode: Literal["min", "max"] = "max"  # used when ``metric`` is not a registered metric (the trainer's score)
    grace_period: int = field(default=1, metadata={"check": _pos, "valid": "int > 0"})
    reduction_factor: float = field(default=3.0, metadata={"check": lambda v: v > 1, "valid": "a number > 1"})
    # default: the config's evaluations + 1 (the closing report); a trial ASHA stops at max_t counts as PRUNED
    max_t: int | None = field(default=None, metadata={"check": _pos, "valid": "int > 0"})


@dataclass(frozen=True)
class Resources:
    cpu: float = field(default=1.0, metadata={"check": _pos, "valid": "a number > 0"})
    gpu: float = field(default=0.0, metadata={"check": lambda v: v >= 0, "valid": "a number >= 0"})
    custom: dict[str, float] = field(default_factory=dict)  # extra Ray resources, e.g. {rtx4090: 1}


@dataclass(frozen=True)
class PretrainCfg:
    """The generator every trial starts from (``model.init_from``): a pretrain run the search trains once (keyed
    by its resolved config under the storage path, reused by later searches), or an existing run / checkpoint."""

    config: str | None = None  # a training config path (relative to the space YAML), usually mode: pretrain
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value on that config
    init_from: str | None = None  # instead: an existing run folder or checkpoint file

    @property
    def enabled(self) -> bool:
        return bool(self.config or self.init_from)


@dataclass(frozen=True)
class StorageCfg:
    path: str = "results/search"  # local folder, NFS folder (same path on every node) or s3://bucket/prefix
    optuna: str | None = None  # journal file path or RDB URL; default: <path>/<name>/optuna.journal


def _latency_target_ok(t: str) -> bool:
    return t in ("cpu", "adb") or (t.startswith(("adb:", "qai-hub:")) and bool(t.split(":", 1)[1].strip()))


def _size_ok(v: tuple[int, int]) -> bool:
    return all(s > 0 and s % 4 == 0 for s in v)


@dataclass(frozen=True)
class ExportCfg:
    """What happens after the search: the Pareto-optimal trials are exported, gated, timed and ranked."""

    top_k: int = field(default=3, metadata={"check": lambda v: v >= 0, "valid": "int >= 0"})
    formats: tuple[str, ...] = field(
        default=("onnx", "tflite", "tflite_fp16"),
        metadata={"check": lambda v: all(f in EXPORT_FORMATS for f in v), "valid": f"formats among {EXPORT_FORMATS}"},
    )
    size: tuple[int, int] = field(default=(256, 256), metadata={"check": _size_ok, "valid": "[H, W], multiples of 4"})
    bench_size: tuple[int, int] = field(default=(1088, 1920),
                                        metadata={"check": _size_ok, "valid": "[H, W], multiples of 4"})
    threads: int = field(default=2, metadata={"check": _pos, "valid": "int > 0"})
    runs: int = field(default=10, metadata={"check": _pos, "valid": "int > 0"})
    # target -> max ms: cpu, adb[:SERIAL] or qai-hub:DEVICE; a phone target also times the fp16 file on its GPU
    latency_targets: dict[str, float] = field(default_factory=dict, metadata={
        "check": lambda v: all(_latency_target_ok(k) and _pos(m) for k, m in v.items()),
        "valid": "{cpu | adb | adb:SERIAL | qai-hub:DEVICE: max ms > 0}"})
    benchmark_binary: str = ""  # TFLite benchmark_model for the phone (adb targets)
    results: str = "results"  # leaderboard.parquet, its HTML report, exports and plots go here


@dataclass(frozen=True)
class SearchSpace:
    """A whole search-space file."""

    name: str = ""
    base: Base = field(default_factory=Base)
    space: dict[str, Param] = field(default_factory=dict)
    objectives: tuple[Objective, ...] = ()
    search: SearchCfg = field(default_factory=SearchCfg)
    scheduler: SchedulerCfg = field(default_factory=SchedulerCfg)
    resources: Resources = field(default_factory=Resources)
    storage: StorageCfg = field(default_factory=StorageCfg)
    export: ExportCfg = field(default_factory=ExportCfg)
    pretrain: PretrainCfg = field(default_factory=PretrainCfg)
    source: str = ""  # the YAML file this came from

    @property
    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.direction or "min" for o in self.objectives]


class _NearestSource(Source):
    """A Source whose ``where`` falls back to the closest enclosing key (list items have no line of their own)."""

    def where(self, key: str) -> str:
        k = key
        while k:
            if k in self.lines:
                return f"{self.file}:{self.lines[k]}"
            k = k.rsplit(".", 1)[0] if "." in k else (k.rsplit("[", 1)[0] if "[" in k else "")
        return self.file


def metric_direction(metric: str) -> str:
    """The declared direction of ``metric`` ('min' | 'max'), from the metric registry."""
    if metric == LATENCY_METRIC:
        return "min"
    from isp_search.metrics import direction

    return direction(metric)


def score_mode(space: SearchSpace) -> str:
    """Direction of the scheduler's scalar: the metric's declared one, else ``scheduler.mode``."""
    try:
        return metric_direction(space.scheduler.metric)
    except Exception:  # not a registered metric, e.g. the trainer's combined ``score``
        return space.scheduler.mode


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
        if any(not isinstance(c, _CHOICE_TYPES) for c in p.choices):
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
    src = _NearestSource(src.file, src.lines)
    if not isinstance(data, dict):
        raise ConfigError(f"{src.file}: expected a mapping with sections base, space, objectives, search, ...")
    raw = dict(data)
    params_raw = raw.pop("space", None) or {}
    objectives_raw = raw.pop("objectives", None)
    if "source" in raw:
        raise ConfigError(f"{src.where('source')}: unknown key source")
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
    return replace(cfg, name=name, base=base, space=params, objectives=objectives, storage=storage, export=export,
                   pretrain=pretrain,
                   source=str(Path(src.file).resolve()) if os.path.exists(src.file) else src.file)


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
    import functools

    return functools.partial(define_space, space=space)
