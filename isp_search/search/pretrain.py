"""The pretrain stage: the generator every trial of a study starts from, trained once and reused.

A run is keyed by its resolved config (``<name>-<hash>``): the same config finds the same folder, so a later
search (or ``isp-search demo``) reuses a completed run and resumes one that was cut off. In a search the run lives
under ``<storage>/pretrain/`` and trains as one Ray task with the trials' resources (a GPU on a cluster);
``run_once`` is the plain function behind it (no Ray), which ``isp-search demo`` calls too.
``<exp>/pretrain.json`` records the run and the sha256 of the checkpoint the trials load, so a resumed study keeps
the run it started with.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
import yaml

from isp_search.configio import to_dict
from isp_search.data.cache import default_cache_dir
from isp_search.errors import UserError
from isp_search.hashing import file_sha256
from isp_search.models.checkpoint import resolve_checkpoint_path
from isp_search.search.context import StudyContext
from isp_search.search.experiment import read_json, write_json
from isp_search.search.faults import hold_marker, hold_point
from isp_search.search.placement import avoiding
from isp_search.search.space import SearchSpace
from isp_search.train.config import TrainConfig, apply_overrides, load_train_config
from isp_search.train.loop import train
from isp_search.train.state import load_training_checkpoint

RECORD = "pretrain.json"  # in the experiment folder: the run the trials start from (see ``record``)


def config_key(cfg: Any) -> str:
    """Eight hex digits of the resolved config (every value that changes the run)."""
    return hashlib.sha1(yaml.safe_dump(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:8]


def is_complete(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and json.loads(summary.read_text()).get("status") == "completed"


def run_once(cfg: Any, run_dir: str | os.PathLike, hold: Callable[[], None] | None = None,
             label: str = "pretrain") -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` unless it completed there; resumed from its ``last.pt`` if cut off.

    ``hold`` (tests) is called after the first checkpoint; ``label`` names the run in its progress lines.
    Returns the run's summary."""
    run_dir = Path(run_dir)
    if is_complete(run_dir):
        return {**json.loads((run_dir / "summary.json").read_text()), "reused": True}
    last = run_dir / "checkpoints" / "last.pt"
    resumed = last.is_file()
    if resumed:  # a retried task (node lost) or a --resume: said in the job log, where the worker's lines go
        print(f"{label}: restarted, from step {load_training_checkpoint(last)['step']} of {cfg.train.steps}",
              flush=True)
    calls = []

    def report(step: int, metrics: dict, checkpoint_dir: str) -> None:
        calls.append(step)
        if hold is not None and len(calls) == 1:
            hold()

    summary = train(cfg, run_dir, report=report if hold else None, resume=run_dir if resumed else None,
                    progress_label=label)
    if summary["status"] != "completed":
        raise UserError(f"{label} run {run_dir} ended {summary['status']}: {summary.get('reason')}")
    return {**summary, "reused": False, "resumed": resumed}


def pretrain_config(space: Any) -> Any | None:
    """The resolved training config of ``space.pretrain`` (None when the space names none or an existing run)."""
    p = space.pretrain
    if not p.config:
        return None
    cfg = load_train_config(p.config)
    if p.overrides:
        cfg = apply_overrides(cfg, dict(p.overrides))
    return apply_overrides(cfg, {"train.progress": False})


def pretrain_root(space: Any) -> Path:
    """``<storage>/pretrain`` (object-store storage: next to ``$ISP_SEARCH_CACHE``, which must then be shared)."""
    if "://" not in space.storage.path:
        return Path(space.storage.path) / "pretrain"
    return default_cache_dir().parent / "pretrain"


def run_dir_of(space: Any, cfg: Any) -> Path:
    return pretrain_root(space) / f"{cfg.name or Path(space.pretrain.config).stem}-{config_key(cfg)}"


def _remote_run(cfg: Any, run_dir: str, marker: str | None) -> dict[str, Any]:
    return run_once(cfg, run_dir, hold_point(marker))


def pretrain_stage(ctx: StudyContext) -> StudyContext:
    """The study with every trial starting from its pretrain run (as it is when the space names none)."""
    rec = read_json(f"{ctx.exp.uri}/{RECORD}")
    if rec and rec.get("init_from") and is_complete_or_file(rec["init_from"]):
        print(f"pretrain: {rec['init_from']} (recorded by this study)", flush=True)
        return ctx.starting_from(rec["init_from"])
    init = starting_point(ctx.space, use_ray=True, marker=hold_marker(ctx.exp.uri, "pretrain"), avoid=ctx.excluded_nodes)
    if init is None:
        return ctx
    write_json(f"{ctx.exp.uri}/{RECORD}", record(init))
    return ctx.starting_from(init)


def starting_point(space: SearchSpace, use_ray: bool = True, marker: str | None = None,
                   avoid: Sequence[str] = ()) -> str | None:
    """The ``model.init_from`` for every trial: ``pretrain.init_from``, or the (trained, reused or resumed) run."""
    p = space.pretrain
    if p.init_from:
        if "://" not in p.init_from and not Path(p.init_from).exists():
            raise UserError(f"{space.source}: pretrain.init_from: no such run folder or checkpoint {p.init_from}")
        return p.init_from
    cfg = pretrain_config(space)
    if cfg is None:
        return None
    run_dir = run_dir_of(space, cfg)
    if is_complete(run_dir):
        print(f"pretrain: {run_dir} (reused)", flush=True)
        return str(run_dir)
    print(f"pretrain: training {run_dir}" + (" (resuming)" if (run_dir / "checkpoints" / "last.pt").is_file()
                                            else ""), flush=True)
    if use_ray:
        summary = _ray_run(space, cfg, run_dir, marker, avoid)
    else:
        summary = run_once(cfg, run_dir, hold_point(marker))
    psnr = (summary.get("val") or {}).get("psnr", float("nan"))
    print(f"pretrain: {run_dir} done ({summary.get('step')} steps, val psnr {psnr:.2f} dB)", flush=True)
    return str(run_dir)


def _ray_run(space: SearchSpace, cfg: TrainConfig, run_dir: Path, marker: str | None,
             avoid: Sequence[str] = ()) -> dict[str, Any]:
    """One Ray task with the trials' resources; a deterministic error comes back as itself, not a Ray traceback."""
    res = space.resources
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, resources=dict(res.custom) or None,
                      max_retries=max(0, space.search.max_failures), retry_exceptions=False,
                      **avoiding(avoid))(_remote_run)
    try:
        return ray.get(task.remote(cfg, str(run_dir), marker))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise UserError(f"pretrain: {e.cause}") from None
        raise UserError(f"pretrain run {run_dir} failed: {type(e.cause).__name__}: {e.cause}") from None


def record(init_from: str) -> dict[str, Any]:
    """What ``<exp>/pretrain.json`` holds: the run and the sha256 of the checkpoint file every trial loads."""
    ck = resolve_checkpoint_path(init_from) if "://" not in init_from else None
    return {"init_from": init_from, "checkpoint": str(ck) if ck else None, "sha256": file_sha256(ck) if ck else None}


def is_complete_or_file(init_from: str) -> bool:
    """A recorded ``init_from`` still usable: a completed run folder or a checkpoint file."""
    p = Path(init_from)
    return "://" in init_from or p.is_file() or is_complete(p)
