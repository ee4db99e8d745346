"""The search-space schema: a base training config, the tuned parameters, the objectives and how the search runs.

One frozen dataclass per YAML section, read by :mod:`isp_search.search.space_file` through
:mod:`isp_search.configio`, so an unknown key or a bad value fails at load as one line naming the file, line and
dotted key. The schema is documented in ``search_spaces/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from isp_search.errors import UserError
from isp_search.export.settings import ExportSettings
from isp_search.metrics import direction

SAMPLERS = ("tpe", "gp", "nsga2", "random")
EXPORT_FORMATS = ("onnx", "tflite", "tflite_fp16", "tflite_int8")
LATENCY_METRIC = "latency_ms"
CHOICE_TYPES = (type(None), bool, int, float, str)


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
    # auto: moasha (Pareto rank on the objectives) for two or more objectives, else asha (on ``metric``)
    type: Literal["auto", "moasha", "asha", "none"] = "auto"
    metric: str = "score"  # ASHA's scalar (also the checkpoint score and each trial's best evaluation)
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
    # the size models are trained and evaluated at: a gate-only export there (isp_search.export.settings)
    gate_size: tuple[int, int] = field(default=(256, 256),
                                       metadata={"check": _size_ok, "valid": "[H, W], multiples of 4"})
    # the deployed size: exported, gated, timed (the leaderboard row's files)
    deploy_size: tuple[int, int] = field(default=(1088, 1920),
                                         metadata={"check": _size_ok, "valid": "[H, W], multiples of 4"})
    threads: int = field(default=2, metadata={"check": _pos, "valid": "int > 0"})
    runs: int = field(default=10, metadata={"check": _pos, "valid": "int > 0"})
    # target -> max ms: cpu, adb[:SERIAL] or qai-hub:DEVICE; a phone target also times the fp16 file on its GPU
    latency_targets: dict[str, float] = field(default_factory=dict, metadata={
        "check": lambda v: all(_latency_target_ok(k) and _pos(m) for k, m in v.items()),
        "valid": "{cpu | adb | adb:SERIAL | qai-hub:DEVICE: max ms > 0}"})
    benchmark_binary: str = ""  # TFLite benchmark_model for the phone (adb targets)
    results: str = "results"  # leaderboard.parquet, its HTML report, exports and plots go here
    mai_c: float = field(default=1.0, metadata={"check": _pos, "valid": "a number > 0"})  # MAI score constant

    @property
    def settings(self) -> ExportSettings:
        """What the publish path takes (the CPU is always timed; phones are the other targets)."""
        return ExportSettings(formats=self.formats, deploy_size=tuple(self.deploy_size),
                              gate_size=tuple(self.gate_size), runs=self.runs, threads=self.threads,
                              targets=tuple(t for t in self.latency_targets if t != "cpu"),
                              benchmark_binary=self.benchmark_binary, mai_c=self.mai_c)


@dataclass(frozen=True)
class ConfirmCfg:
    """After the search: the exported trials and the default point trained again with more seeds."""

    seeds: int = field(default=2, metadata={"check": lambda v: v >= 0, "valid": "int >= 0 (0: no confirmation)"})


@dataclass(frozen=True)
class MlflowCfg:
    """Ray Tune's MLflow logger: one MLflow run per trial, its sampled parameters and every report's metrics."""

    tracking_uri: str | None = None  # turns it on: file:///mnt/isp-search/mlruns, sqlite:///x.db, http://host:5000
    experiment: str | None = None  # the MLflow experiment; default: the study's experiment name

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri)


@dataclass(frozen=True)
class WandbCfg:
    """Ray Tune's Weights & Biases logger: one W&B run per trial (id = the Ray trial id)."""

    project: str | None = None  # turns it on
    mode: Literal["online", "offline"] = "online"  # offline: runs stay on disk for `wandb sync`
    group: str | None = None  # default: the study's experiment name
    dir: str | None = None  # where wandb/ goes; default $WANDB_DIR, else the experiment folder

    @property
    def enabled(self) -> bool:
        return bool(self.project)


@dataclass(frozen=True)
class TrackingCfg:
    """Experiment tracking where users already look (isp_search.search.tracking); each part is off when absent."""

    mlflow: MlflowCfg = field(default_factory=MlflowCfg, metadata={
        "check": lambda m: m.enabled, "valid": "a tracking_uri (file:///..., sqlite:///....db or http://host:port)"})
    wandb: WandbCfg = field(default_factory=WandbCfg, metadata={
        "check": lambda w: w.enabled, "valid": "a project (the W&B project the trials' runs go to)"})


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
    confirm: ConfirmCfg = field(default_factory=ConfirmCfg)
    tracking: TrackingCfg = field(default_factory=TrackingCfg)
    source: str = ""  # the YAML file this came from
    command_line: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE: errors about them name the flag

    @property
    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.direction or "min" for o in self.objectives]

    @property
    def scheduler_type(self) -> str:
        """The early-stopping scheduler the search runs: ``scheduler.type`` with ``auto`` resolved."""
        if self.scheduler.type == "auto":
            return "moasha" if len(self.objectives) >= 2 else "asha"
        return self.scheduler.type


def metric_direction(metric: str) -> str:
    """The declared direction of ``metric`` ('min' | 'max'), from the metric registry."""
    return "min" if metric == LATENCY_METRIC else direction(metric)


def score_mode(space: SearchSpace) -> str:
    """Direction of the scheduler's scalar: the metric's declared one, else ``scheduler.mode``."""
    try:
        return metric_direction(space.scheduler.metric)
    except UserError:  # not a registered metric, e.g. the trainer's combined ``score``
        return space.scheduler.mode


