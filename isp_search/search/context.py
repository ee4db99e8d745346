"""What every stage of a study works on: the resolved space, the base training config (loaded once), the
experiment and whether it is resumed.

:func:`open_study` builds it on the driver before Ray starts, so a bad config or a missing experiment is a one-line
error that costs nothing. The pretrain stage hands back a context whose trials start from its run
(:meth:`StudyContext.starting_from`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from isp_search.configio import NearestSource, load_yaml
from isp_search.errors import UserError
from isp_search.search.experiment import Experiment, find_experiment, new_experiment
from isp_search.search.space import Base, PretrainCfg, Resources, SchedulerCfg, SearchSpace, score_mode
from isp_search.train.config import TrainConfig, apply_overrides, load_train_config, train_config_from_dict

SMOKE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smoke_unpaired.yaml"


@dataclass(frozen=True)
class StudyContext:
    """One study: every stage reads it; only the pretrain stage makes a new one (with ``model.init_from``)."""

    space: SearchSpace  # as resolved: file, command-line overrides, --smoke-test
    cfg: TrainConfig  # the trainer config every trial starts from (the space's base config + overrides)
    exp: Experiment
    resume: bool = False
    excluded_nodes: tuple[str, ...] = ()  # Ray node ids that failed the node check (--skip-bad-nodes)

    @property
    def score_mode(self) -> str:
        """Direction of the scheduler's scalar (``max`` for the trainer's combined score)."""
        return score_mode(self.space)

    @property
    def data(self) -> tuple[str, str] | None:
        """(root, format) of the trials' data set, for export calibration and sample crops."""
        d = self.cfg.data
        return (str(d.root), str(d.format)) if d.root and d.format else None

    def starting_from(self, init_from: str) -> StudyContext:
        """The same study with every trial starting from ``init_from`` (the pretrain stage's run)."""
        over = {**self.space.base.overrides, "model.init_from": init_from}
        space = replace(self.space, base=replace(self.space.base, overrides=over))
        return replace(self, space=space, cfg=apply_overrides(self.cfg, {"model.init_from": init_from}))


def open_study(space: SearchSpace, name: str | None = None, resume: bool = False,
               smoke: bool = False) -> StudyContext:
    """The context of a new study (``name`` or ``<space>-<time>``) or of the one to resume."""
    if smoke:
        space = smoke_space(space)
    cfg = base_train_config(space)
    check_space_keys(space, cfg)
    exp = find_experiment(space, name) if resume else new_experiment(space, name)
    return StudyContext(space, cfg, exp, resume)


def base_train_config(space: SearchSpace) -> TrainConfig:
    """The trainer config every trial starts from: the space's ``base.config`` with ``base.overrides``."""
    if isinstance(space.base.config, dict):
        yaml_dir = Path(space.source).parent if space.source else Path.cwd()
        cfg = train_config_from_dict(space.base.config, base_dir=yaml_dir, name=f"{space.source}:base.config")
    else:
        cfg = load_train_config(space.base.config)
    for key, value in space.base.overrides.items():  # one at a time: an error names where its key came from
        try:
            cfg = apply_overrides(cfg, {key: value})
        except UserError as e:
            raise UserError(f"{override_source(space, key)}: {e}") from None
    # trials log to TensorBoard and Ray's table; a progress bar per trial would only flood the driver's output
    return apply_overrides(cfg, {"train.progress": False})


def override_source(space: SearchSpace, key: str) -> str:
    """Where ``base.overrides[key]`` came from: ``--set KEY=VALUE``, or the space file's line."""
    if key in space.command_line:
        return f"--set {key}={space.command_line[key]}"
    where = space.source or "<space>"
    if space.source and Path(space.source).is_file():
        _, src = load_yaml(space.source)
        where = NearestSource(src.file, src.lines).where(f"base.overrides.{key}")
    return f"{where}: base.overrides.{key}"


def check_space_keys(space: SearchSpace, cfg: TrainConfig) -> None:
    """Every tuned key must exist in the trainer config: try one value of each (first choice / low)."""
    for key, p in space.space.items():
        value = p.choices[0] if p.type == "categorical" else (int(p.low) if p.type == "int" else p.low)
        for k in (key, *p.also):
            try:
                apply_overrides(cfg, {k: value})
            except UserError as e:
                raise UserError(f"{space.source}: space.{key}: {e}") from None


def smoke_space(space: SearchSpace) -> SearchSpace:
    """``--smoke-test``: the same space on the tiny CPU training config, two trials, one at a time."""
    if not SMOKE_CONFIG.is_file():
        raise UserError(f"--smoke-test needs {SMOKE_CONFIG}")
    return replace(
        space,
        base=Base(config=str(SMOKE_CONFIG)),
        pretrain=PretrainCfg(),  # the smoke config trains from random on purpose (model.allow_scratch)
        search=replace(space.search, num_samples=2, max_concurrent=1,
                       points_to_evaluate=space.search.points_to_evaluate[:1]),
        scheduler=SchedulerCfg(type="none", metric=space.scheduler.metric, mode=space.scheduler.mode),
        resources=Resources(cpu=1.0),
        export=replace(space.export, top_k=1, formats=("tflite",), gate_size=(64, 64), deploy_size=(64, 64),
                       threads=1, runs=3),
    )
