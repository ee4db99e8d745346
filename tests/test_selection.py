"""Checkpoint selection: best.pt holds the generator of the best evaluation (by ``train.select_by``), the start of a
run from ``model.init_from`` is the first candidate (evaluated at step 0), and a run that never beats its start ends
with ``best_step: 0`` and its start's weights in best.pt."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from isp_search.export.publish import weights_digest
from isp_search.models.checkpoint import load_generator
from isp_search.train.config import apply_overrides, load_train_config
from isp_search.train.loop import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _digest(path: Path) -> str:
    return weights_digest(load_generator(path).model)


def _run(cfg, run_dir: Path) -> tuple[dict, dict[int, str], list[dict]]:
    """Train; returns the summary, the weights digest of the generator at each evaluation, and the val rows."""
    at_eval: dict[int, str] = {}

    def report(step: int, metrics: dict, checkpoint_dir: str) -> None:
        at_eval[step] = _digest(Path(checkpoint_dir) / "last.pt")  # the generator that was just evaluated

    summary = train(cfg, run_dir, report=report)
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, at_eval, [r for r in rows if r["kind"] == "val"]


def _best_by_rule(vals: list[dict], key: str) -> int:
    """The step a correct selection picks: the highest ``key``, the earliest on a tie."""
    return max(vals, key=lambda r: (r[key], -r["step"]))["step"]


def test_best_checkpoint_is_the_best_evaluation_and_the_start_is_a_candidate(tmp_path, synth_root):
    torch.manual_seed(0)
    over = {"data.root": str(synth_root), "data.synthetic": False, "train.steps": 12, "train.eval_interval": 3}
    pre = apply_overrides(load_train_config(CONFIGS / "smoke_pretrain.yaml"), {**over, "train.progress": False})
    summary, at_eval, vals = _run(pre, tmp_path / "pre")
    assert [r["step"] for r in vals] == [3, 6, 9, 12]  # from scratch: no step-0 candidate
    assert summary["best_step"] == _best_by_rule(vals, "score") > 3  # pretraining improves after its first eval
    best = tmp_path / "pre" / "checkpoints" / "best.pt"
    assert _digest(best) == at_eval[summary["best_step"]]  # best.pt is the generator of that evaluation

    # From that start with a destructive learning rate: every later evaluation is worse, so the start stays best.
    un = apply_overrides(load_train_config(CONFIGS / "smoke_unpaired.yaml"), {
        **over, "train.steps": 4, "train.eval_interval": 2, "optim.g_lr": 1.0, "model.init_from": str(best),
        "model.allow_scratch": False, "train.progress": False})
    summary, at_eval, vals = _run(un, tmp_path / "un")
    assert [r["step"] for r in vals] == [0, 2, 4] and sorted(at_eval) == [0, 2, 4]
    assert at_eval[0] == _digest(best)  # step 0 evaluated the start itself
    assert vals[0]["score"] > max(r["score"] for r in vals[1:])  # the premise: training only made it worse
    assert summary["best_step"] == 0 and summary["val"]["score"] == vals[0]["score"]
    assert _digest(tmp_path / "un" / "checkpoints" / "best.pt") == _digest(best)
    assert hashlib.sha256((tmp_path / "un" / "checkpoints" / "best.pt").read_bytes()).hexdigest()  # a real file
