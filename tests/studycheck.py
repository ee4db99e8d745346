"""Checks on a finished study's folder that several search tests share."""

from __future__ import annotations

import json
from pathlib import Path


def selection_is_one_evaluation(exp: Path, trials, rows: list[dict]) -> list[int]:
    """What Optuna was told, the checkpoint exported and the row's weights all belong to the evaluation that wrote
    the trial's best.pt: the values are that evaluation's row in metrics.jsonl, best.pt holds its step, and the
    leaderboard row deploys best.pt's weights."""
    import torch

    from isp_search.export.publish import weights_digest
    from isp_search.models.checkpoint import load_generator

    by_trial = {r["trial_id"]: r for r in rows}
    best_steps = []
    for t in (t for t in trials if t.state.name == "COMPLETE"):
        run = exp / f"trial_{t.user_attrs['ray_trial_id']}" / "run"
        vals = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "val"}
        best_step = int(t.user_attrs["final_result"]["best_step"])
        assert best_step in vals, (sorted(vals), best_step)
        assert t.values == [vals[best_step]["lpips"], vals[best_step]["psnr"]], (t.values, vals[best_step])
        assert torch.load(run / "checkpoints" / "best.pt", weights_only=False)["step"] == best_step
        if t.user_attrs["ray_trial_id"] in by_trial:  # exported: the deployed weights are best.pt's
            row = by_trial[t.user_attrs["ray_trial_id"]]
            assert row["weights_sha256"] == weights_digest(load_generator(run / "checkpoints" / "best.pt").model)
        best_steps.append(best_step)
    return best_steps
