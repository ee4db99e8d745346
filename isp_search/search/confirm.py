"""The confirmation stage: the trials about to be exported and the default point, trained again with more seeds.

One GAN run per configuration is one draw of a noisy process, and the noise depends on the configuration. After
the search, the Pareto trials the export stage would export (``export.top_k`` spread along the front, those that
beat their start) and the default point (the first ``search.points_to_evaluate``) are trained again with
``confirm.seeds`` more seeds (``train.seed`` + 1, + 2, ...) at the same budget, as Ray tasks with a trial's
resources. The trial's own run is the first seed, so each ends with n = seeds + 1 values per objective on val
(its best evaluation) and test (that checkpoint).

Each run lives in ``<storage>/<name>/confirm/<trial id>-seed<k>/``: a run that completed is reused and one that
was cut off resumes from its last checkpoint, so a ``--resume`` after a driver kill runs every confirmation once.
``<storage>/<name>/confirm.json`` records the means and standard deviations.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray

from isp_search.data.cache import default_cache_dir
from isp_search.errors import UserError
from isp_search.search.context import StudyContext
from isp_search.search.experiment import write_json
from isp_search.search.faults import hold_marker, hold_point
from isp_search.search.keep_default import is_point
from isp_search.search.optuna_storage import load_study
from isp_search.search.pareto import export_choice
from isp_search.search.placement import avoiding
from isp_search.search.pretrain import run_once
from isp_search.search.reconcile import FINAL_ATTR, RAY_TRIAL_ATTR
from isp_search.search.sampling import to_overrides
from isp_search.train.config import TrainConfig, apply_overrides

RECORD = "confirm.json"
SPLITS = ("val", "test")
METRICS = ("psnr", "ssim", "lpips")


@dataclass
class Confirmed:
    """A configuration's values over its seeds: ``mean``/``sd`` keyed ``val/lpips``, ``test/psnr``, ..."""

    trial_id: str
    number: int
    n: int
    mean: dict[str, float] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)  # the trial's own run first, then one folder per extra seed
    failed: list[str] = field(default_factory=list)  # seeds whose run did not complete (diverged), with why

    def se(self, key: str) -> float:
        """Standard error of the mean of ``key``."""
        return self.sd.get(key, math.nan) / math.sqrt(self.n) if self.n else math.nan


def confirm_root(ctx: StudyContext) -> Path:
    """Where the confirmation runs live: beside the trials, or next to the shared cache for object storage."""
    if "://" not in ctx.space.storage.path:
        return Path(ctx.space.storage.path) / ctx.exp.name / "confirm"
    return default_cache_dir().parent / "confirm" / ctx.exp.name


def candidates(study: optuna.Study, chosen: list[optuna.trial.FrozenTrial], ctx: StudyContext
               ) -> list[optuna.trial.FrozenTrial]:
    """The trials to confirm: ``chosen`` (the ones the export stage would export) and the default point's trial."""
    out = list(chosen)
    points = ctx.space.search.points_to_evaluate
    if points:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if is_point(t.params, points[0]) and all(t.number != c.number for c in out):
                out.append(t)
                break
    return out


def confirm_stage(ctx: StudyContext) -> dict[int, Confirmed]:
    """Every candidate's extra seeds trained (or found done), as Ray tasks; Optuna trial number -> Confirmed."""
    seeds = ctx.space.confirm.seeds
    study = load_study(ctx.exp.study_name, ctx.exp.optuna_storage)
    trials = candidates(study, export_choice(study, ctx.space), ctx) if seeds > 0 else []
    if not trials:
        return {}
    root = confirm_root(ctx)
    jobs = []
    for t in trials:
        rid = str(t.user_attrs.get(RAY_TRIAL_ATTR, t.number))
        for k in range(1, seeds + 1):
            cfg = apply_overrides(ctx.cfg, {**to_overrides(ctx.space, dict(t.params)),
                                            "train.seed": ctx.cfg.train.seed + k})
            jobs.append((t, k, cfg, root / f"{rid}-seed{k}"))
    print(f"confirm: {len(trials)} configuration(s) x {seeds} more seed(s) = {len(jobs)} run(s) in {root}",
          flush=True)
    res = ctx.space.resources
    task = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu, resources=dict(res.custom) or None,
                      max_retries=max(0, ctx.space.search.max_failures), retry_exceptions=False,
                      **avoiding(ctx.excluded_nodes))(_run)
    marker = hold_marker(ctx.exp.uri, "confirm")
    refs = [task.remote(cfg, str(run_dir), marker if i == 0 else None) for i, (_, _, cfg, run_dir) in enumerate(jobs)]
    done = ray.get(refs)
    out: dict[int, Confirmed] = {}
    for t in trials:
        rid = str(t.user_attrs.get(RAY_TRIAL_ATTR, t.number))
        mine = [(k, run_dir, summary) for (tt, k, _, run_dir), summary in zip(jobs, done) if tt.number == t.number]
        out[t.number] = combine(t, rid, mine)
    write_json(f"{ctx.exp.uri}/{RECORD}", {str(n): asdict(c) for n, c in out.items()})
    for c in out.values():
        print(f"confirm: trial {c.trial_id}: " + ", ".join(
            f"{k} {c.mean[k]:.4g} ± {c.sd[k]:.2g}" for k in (f"val/{m}" for m in ctx.space.metric_names)
            if k in c.mean) + f" (n={c.n})", flush=True)
    return out


def _run(cfg: TrainConfig, run_dir: str, marker: str | None) -> dict[str, Any]:
    """One seed's run (reused when complete, resumed when cut off); a run that did not complete is a result."""
    try:
        return run_once(cfg, run_dir, hold_point(marker), label=f"confirm {Path(run_dir).name}")
    except UserError as e:
        return {"status": "failed", "reason": str(e)}


def combine(trial: optuna.trial.FrozenTrial, rid: str, runs: list[tuple[int, Path, dict]]) -> Confirmed:
    """The trial's own values (seed 0) and its extra seeds' summaries: mean and sample sd per split/metric."""
    final = trial.user_attrs.get(FINAL_ATTR) or {}
    values = [{**{f"val/{m}": final[m] for m in METRICS if isinstance(final.get(m), (int, float))},
               **{k: v for k, v in final.items() if k.startswith("test/") and k.split("/", 1)[1] in METRICS}}]
    paths = [str(final.get("run_dir", ""))]
    failed = []
    for k, run_dir, summary in runs:
        if summary.get("status") != "completed":
            failed.append(f"seed {k}: {summary.get('reason') or summary.get('status')}")
            continue
        values.append({f"{split}/{m}": (summary.get(split) or {}).get(m) for split in SPLITS for m in METRICS
                       if isinstance((summary.get(split) or {}).get(m), (int, float))})
        paths.append(str(run_dir))
    keys = sorted({k for v in values for k in v})
    mean, sd = {}, {}
    for key in keys:
        xs = [float(v[key]) for v in values if key in v]
        mean[key] = statistics.fmean(xs)
        sd[key] = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return Confirmed(rid, trial.number, len(values), mean, sd, paths, failed)


def beats_by(best: Confirmed, default: Confirmed, key: str, direction: str) -> tuple[float, float, bool] | None:
    """(difference best - default, standard error of that difference, whether it exceeds twice that error in the
    better direction); None when either lacks ``key``."""
    if key not in best.mean or key not in default.mean:
        return None
    diff = best.mean[key] - default.mean[key]
    se = math.sqrt(best.se(key) ** 2 + default.se(key) ** 2)
    better = diff > 0 if direction == "max" else diff < 0
    return diff, se, better and abs(diff) > 2 * se
