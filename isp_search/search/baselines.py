"""The study's two baselines, measured as the trials measure themselves, so every searched model reads as a
difference to them.

* **start**: the generator every trial starts from (``model.init_from``, usually the pretrain stage's run),
  evaluated with the trials' base config: the same val and test subsets (``data.eval_limit``), batch size and
  metric networks (``backbone_weights``), as one Ray task with the trials' resources (a GPU on a cluster).
* **default**: the trial of the space's first ``search.points_to_evaluate`` (the paper's default point): its val
  values are what it told Optuna, its test values its closing report's.

``<exp>/baselines.json`` keeps the start's measurement, so a resumed study does not measure it again. The export
stage exports and times both like any model (leaderboard rows with ``kind: baseline``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
import ray
from optuna.trial import TrialState

from isp_search.data.datasets import make_datasets
from isp_search.errors import UserError
from isp_search.hashing import file_sha256
from isp_search.metrics import Evaluator
from isp_search.models.checkpoint import load_generator, resolve_checkpoint_path
from isp_search.search.context import StudyContext
from isp_search.search.experiment import read_json, write_json
from isp_search.search.keep_default import is_point
from isp_search.search.placement import avoiding
from isp_search.search.reconcile import FINAL_ATTR, RAY_TRIAL_ATTR, final_trials
from isp_search.search.space import SearchSpace, metric_direction
from isp_search.train.config import TrainConfig
from isp_search.train.evaluate import EVAL_METRICS, evaluate
from isp_search.train.loop import pick_device

RECORD = "baselines.json"


@dataclass
class Baseline:
    name: str  # start | default
    source: str  # the checkpoint or run folder (start), the trial (default)
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    trial_id: str = ""  # default: its Ray trial id, whose best checkpoint is exported
    model_id: str = ""
    exported: bool = False
    latency_ms: float | None = None
    latency_target: str | None = None
    note: str = ""
    duplicate_of: str | None = None
    confirmed: Any = None  # default: its values over seeds (isp_search.search.confirm.Confirmed)


def measure(cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """Val and test metrics of ``cfg.model.init_from`` as a trial of ``cfg`` measures itself."""
    device = pick_device(cfg.train.device)
    data = make_datasets(cfg)
    gen = load_generator(cfg.model.init_from, arch=cfg.model.arch, device=device).model
    evaluator = Evaluator(EVAL_METRICS, cfg.backbone_weights, device)
    out = {}
    for split in ("val", "test"):
        if split in data:
            res = evaluate(gen, data[split], evaluator, device, cfg.train.batch_size, cfg.data.eval_limit,
                           cfg.train.score_lpips_weight)
            out[split] = {**res, "n_images": min(len(data[split]), cfg.data.eval_limit or len(data[split]))}
    return out


def start_baseline(ctx: StudyContext) -> Baseline | None:
    """The start's baseline (None when the trials start from scratch): recorded by this study, else measured."""
    init = ctx.cfg.model.init_from
    if not init:
        return None
    rec = read_json(f"{ctx.exp.uri}/{RECORD}") or {}
    digest = _checkpoint_digest(str(init))
    if rec.get("start", {}).get("source") == str(init) and rec.get("start_sha256") == digest:
        return Baseline(**rec["start"])
    print(f"baselines: measuring the start {init} on the trials' val and test subsets", flush=True)
    res = ctx.space.resources
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, resources=dict(res.custom) or None,
                      max_retries=max(0, ctx.space.search.max_failures), retry_exceptions=False,
                      **avoiding(ctx.excluded_nodes))(measure)
    try:
        splits = ray.get(task.remote(ctx.cfg))
    except ray.exceptions.RayError as e:  # the study's results stand without it: said, not raised
        cause = getattr(e, "cause", None) or e
        print(f"baselines: the start could not be measured: {str(cause).splitlines()[0]}", flush=True)
        return Baseline("start", str(init), note=f"not measured: {str(cause).splitlines()[0]}")
    b = Baseline("start", str(init), val=splits.get("val", {}), test=splits.get("test", {}))
    write_json(f"{ctx.exp.uri}/{RECORD}", {**rec, "start": asdict(b), "start_sha256": digest})
    return b


def _checkpoint_digest(init: str) -> str | None:
    """sha256 of the checkpoint ``init`` resolves to (None for a URI or when it cannot be resolved)."""
    if "://" in init:
        return None
    try:
        return file_sha256(resolve_checkpoint_path(init))
    except (UserError, OSError):
        return None


def default_point(space: SearchSpace) -> dict[str, Any] | None:
    """The paper's default point: the space's first ``search.points_to_evaluate``."""
    return dict(space.search.points_to_evaluate[0]) if space.search.points_to_evaluate else None


def default_baseline(study: optuna.Study, space: SearchSpace) -> Baseline | None:
    """The COMPLETE trial of the default point (None when the space has none or it did not complete)."""
    point = default_point(space)
    if point is None:
        return None
    for t in final_trials(study, (TrialState.COMPLETE,)):
        if is_point(t.params, point):
            final = t.user_attrs.get(FINAL_ATTR) or {}
            val = {k: final[k] for k in (*EVAL_METRICS, "score") if isinstance(final.get(k), (int, float))}
            val.update(zip(space.metric_names, t.values))
            test = {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("test/")}
            rid = str(t.user_attrs.get(RAY_TRIAL_ATTR, ""))
            b = Baseline("default", f"trial #{t.number} {rid}", val=val, test=test, trial_id=rid)
            if final.get("best_step") == 0:
                b.note = "never beat its start (best evaluation at step 0)"
            return b
    return None


def difference(values: dict[str, float], base: dict[str, float], metric: str) -> float | None:
    """``values[metric] - base[metric]``, or None when either is missing."""
    a, b = values.get(metric), base.get(metric)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    return float(a) - float(b)


def beats(values: dict[str, float], base: dict[str, float], metric: str) -> bool | None:
    """Whether ``values`` is better than ``base`` on ``metric`` (by more than float noise); None: not measured."""
    d = difference(values, base, metric)
    if d is None:
        return None
    if math.isclose(values[metric], base[metric], rel_tol=1e-5, abs_tol=1e-7):
        return False
    return d > 0 if metric_direction(metric) == "max" else d < 0
