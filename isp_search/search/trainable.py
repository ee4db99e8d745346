"""``train()`` wrapped as a Ray Tune function trainable.

Every evaluation of the trainer becomes a ``tune.report`` carrying the validation metrics and the trainer's
checkpoint folder (so a trial whose worker dies restarts from it via ``tune.get_checkpoint()``); the run folder
itself (metrics, TensorBoard, samples) is written under the experiment in storage, not on the worker's disk (Ray
2.60 keeps ``get_trial_dir()`` local). The closing report
has ``final=1``, the trial's status and the objective values of its best evaluation so far (by the scheduler's
scalar ``score``); the searcher reads that report to tell Optuna COMPLETE, PRUNED or FAIL.

In the job log a trial is ``trial <id>: ...`` lines: train()'s progress (every 30 s and at each evaluation) and,
restarted from a checkpoint (node lost, ``--resume``), ``trial <id>: attempt 2 after a restart, from step 50``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune

from isp_search.export.bench import bench_tflite
from isp_search.export.pipeline import export_model
from isp_search.search.required import objective_names, with_required
from isp_search.search.sampling import to_overrides
from isp_search.search.space import LATENCY_METRIC, SearchSpace
from isp_search.train.config import TrainConfig, apply_overrides
from isp_search.train.loop import train

STATE_FILE = "search_state.json"  # best-so-far tracker, stored inside each reported checkpoint


class BestSoFar:
    """The evaluation with the best ``score`` seen so far, and which attempt of the trial this is: both survive
    restarts through the checkpoint (so an attempt that died before its first checkpoint is not counted)."""

    def __init__(self, score: str, mode: str) -> None:
        self.score, self.mode = score, mode
        self.best: dict[str, Any] | None = None
        self.attempt, self.restored_step = 1, 0

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        s = metrics.get(self.score)
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            return
        if self.best is None or (s > self.best[self.score] if self.mode == "max" else s < self.best[self.score]):
            self.best = {**{k: v for k, v in metrics.items() if _plain(v)}, "step": step}

    def save(self, folder: str | Path, step: int) -> None:
        (Path(folder) / STATE_FILE).write_text(json.dumps({"best": self.best, "step": step,
                                                           "attempt": self.attempt}))

    def load(self, folder: str | Path) -> None:
        """Continue from the checkpoint in ``folder``: its best so far, the next attempt, its step."""
        p = Path(folder) / STATE_FILE
        state = json.loads(p.read_text()) if p.is_file() else {}
        self.best = state.get("best")
        self.attempt = int(state.get("attempt", 1)) + 1
        self.restored_step = int(state.get("step", (self.best or {}).get("step", 0)))


def _plain(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """Ray results must be serialisable; keep scalars only (tensors become floats)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if hasattr(v, "item"):
            v = v.item()
        if _plain(v):
            out[k] = v
    return out


def trial_run_dir(exp_uri: str, trial_id: str, local_trial_dir: str) -> tuple[Path, str | None]:
    """Where a trial's run folder goes, and the URI to upload it to: on a local/NFS storage path the run folder
    is ``<storage>/<name>/trial_<id>/run`` itself (every node writes there); on an object store it is written on
    the worker's disk and uploaded to the same place after every evaluation."""
    rel = f"trial_{trial_id}/run"
    if "://" not in exp_uri:
        return Path(exp_uri) / rel, None
    return Path(local_trial_dir) / "run", f"{exp_uri.rstrip('/')}/{rel}"


def upload_run(run_dir: Path, uri: str) -> None:
    """Copy the run folder's new or changed files (not ``checkpoints/``: Ray stores those) to ``uri``."""
    fs, base = pyarrow.fs.FileSystem.from_uri(uri)
    for f in run_dir.rglob("*"):
        rel = f.relative_to(run_dir)
        if not f.is_file() or rel.parts[0] in ("checkpoints", "latency_export"):
            continue
        dst = f"{base}/{rel.as_posix()}"
        info = fs.get_file_info(dst)
        if info.type == pyarrow.fs.FileType.File and info.size == f.stat().st_size and rel.suffix == ".png":
            continue  # samples never change once written; logs grow and are copied again
        fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        pyarrow.fs.copy_files(str(f), dst, destination_filesystem=fs)


def run_trial(config: dict[str, Any], *, space: SearchSpace, base_cfg: TrainConfig, score_mode: str,
              exp_uri: str = "") -> None:
    """The Ray Tune function trainable: apply the sampled values to ``base_cfg`` and train, reporting as it goes."""
    cfg = apply_overrides(base_cfg, to_overrides(space, dict(config)))
    ctx = tune.get_context()
    if exp_uri:
        run_dir, upload = trial_run_dir(exp_uri, ctx.get_trial_id(), ctx.get_trial_dir())
    else:
        run_dir, upload = Path(ctx.get_trial_dir()) / "run", None
    tracker = BestSoFar(space.scheduler.metric, score_mode)
    label = f"trial {ctx.get_trial_id()}"  # its progress lines (train()'s, one per evaluation) in the job log

    def report(step: int, metrics: dict[str, Any], checkpoint_dir: str) -> None:
        values = _numbers(metrics)
        tracker.update(step, values)
        tracker.save(checkpoint_dir, step)
        if upload:
            upload_run(run_dir, upload)
        tune.report(with_required({**values, "step": step}, objective_names(space)),
                    checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    checkpoint = tune.get_checkpoint()
    resume_ctx = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    with resume_ctx as resume_dir:
        if resume_dir:
            tracker.load(resume_dir)
            print(f"{label}: attempt {tracker.attempt} after a restart, from step {tracker.restored_step}",
                  flush=True)
        summary = train(cfg, run_dir, report=report, resume=resume_dir, progress_label=label)
    final = final_report(summary, tracker, space, run_dir)
    if upload:
        upload_run(run_dir, upload)
        final["run_uri"] = upload
    tune.report(with_required(final, objective_names(space)))


def final_report(summary: dict[str, Any], tracker: BestSoFar, space: SearchSpace, run_dir: Path) -> dict[str, Any]:
    """The closing result: best-so-far values under the objective names, the trial status and test metrics."""
    status = str(summary.get("status", "completed"))
    out: dict[str, Any] = {"final": 1, "trial_status": status, "run_dir": str(run_dir)}
    reason = summary.get("reason") or summary.get("fail_reason") or summary.get("error")
    if status != "completed":
        step = summary.get("step")
        out["fail_reason"] = str(reason) if reason else f"{status} at step {step}"
    best = tracker.best or {}
    for k, v in best.items():
        if k != "step":
            out[k] = v
    out["best_step"] = out["step"] = best.get("step", -1)
    for k in ("steps_per_s", "elapsed_s", "best_score"):
        if isinstance(summary.get(k), (int, float)):
            out[f"summary/{k}"] = summary[k]
    test = summary.get("test")
    if isinstance(test, dict):
        out.update({f"test/{k}": v for k, v in _numbers(test).items()})
    if status == "completed" and tracker.best is None:
        out.update(trial_status="no_evaluation", fail_reason="the trainer reported no finite evaluation")
    if status == "completed" and LATENCY_METRIC in space.metric_names and tracker.best is not None:
        out[LATENCY_METRIC] = trial_latency(run_dir, space)
    return out


def trial_latency(run_dir: Path, space: SearchSpace) -> float:
    """Median LiteRT latency (ms) of the trial's model at the deployed size, for a latency objective."""
    result = export_model(run_dir, run_dir / "latency_export", formats=["tflite"],
                          size=tuple(space.export.deploy_size))
    if "tflite" not in result.paths:
        return float("nan")
    return float(bench_tflite(result.paths["tflite"], threads=space.export.threads, runs=space.export.runs)["median_ms"])
