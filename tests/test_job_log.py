"""A search as a person reads it afterwards: the job log (stdout to a pipe, as under `ray job submit`) and
TensorBoard, on a real local Ray with ASHA pruning a trial.

One search for the module: two trials one after the other, four evaluations each; the second weighs LPIPS a
hundred times more in the scheduler's ``score`` (``train.score_lpips_weight``), so its score is far below the
first's and ASHA stops it at its second evaluation, deterministically.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from raycluster import BIN, ENV, running_head, tracebacks

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CFG = ROOT / "configs" / "smoke_unpaired.yaml"
ANSI = re.compile(r"\x1b\[")
PROGRESS = re.compile(r"trial [0-9a-f]{8}: \d+/4 step \(\d+%\), [\d.e+-]+ step/s, eta \d+[smh].*, psnr [\d.]+")


@pytest.fixture(scope="module")
def head():
    yield from running_head()


@pytest.fixture(scope="module")
def search(head):
    """(experiment folder, job log) of the search, its driver's stdout and stderr one pipe. Under a short folder:
    the closing summary names the Optuna journal twice, so a deep pytest path alone would pass 120 columns."""
    tmp = Path(tempfile.mkdtemp(prefix="j", dir="/tmp"))
    try:
        yield from _search(head, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _search(head, tmp: Path):
    space = tmp / "space.yaml"
    space.write_text(f"""\
name: log
base:
  config: {SMOKE_CFG}
  overrides: {{train.steps: 4, train.eval_interval: 1}}
space:
  train.score_lpips_weight: {{type: categorical, choices: [10.0, 1000.0]}}
search: {{sampler: tpe, seed: 0, num_samples: 2, max_concurrent: 1, max_failures: 1,
         points_to_evaluate: [{{train.score_lpips_weight: 10.0}}, {{train.score_lpips_weight: 1000.0}}]}}
scheduler: {{type: asha, metric: score, mode: max, grace_period: 2, reduction_factor: 2}}
resources: {{cpu: 1}}
storage: {{path: {tmp / 'e'}}}
export: {{top_k: 0, formats: [tflite], results: {tmp / 'results'}}}
""")
    env = {k: v for k, v in ENV.items() if k != "RAY_DEDUP_LOGS"}  # the driver's own defaults, as for a user
    t0 = time.time()
    r = subprocess.run([str(BIN / "isp-search"), "search", str(space), "--name", "j1"], env={**env, "RAY_ADDRESS":
                       head.address}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp,
                       timeout=480, check=False)
    print(f"search for the job log: {time.time() - t0:.0f} s")
    assert r.returncode == 0, r.stdout[-5000:]
    yield tmp / "e" / "j1", r.stdout


def pruned_trial(exp: Path) -> str:
    from isp_search.search.optuna_storage import load_study

    meta = json.loads((exp / "isp_search.json").read_text())
    trials = load_study(meta["study_name"], meta["optuna_storage"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"], [(t.state, t.user_attrs) for t in trials]
    return trials[1].user_attrs["ray_trial_id"]


def test_job_log_is_plain_narrow_lines_with_trial_progress(search):
    """No line wider than 120 columns, no ANSI escape, no traceback, no Ray hint; each trial's progress lines say
    which trial, step/total, rate, eta and the latest validation numbers; the pruned trial is said PRUNED."""
    exp, log = search
    lines = log.splitlines()
    wide = [ln for ln in lines if len(ln) > 120]
    assert not wide, "\n".join(wide)
    assert not ANSI.search(log), [ln for ln in lines if ANSI.search(ln)]
    assert not tracebacks(log) and "Traceback" not in log, log[-4000:]
    assert "RAY_DEDUP_LOGS" not in log and "TUNE_WARN" not in log and "repeated" not in log, log[-4000:]
    progress = [ln for ln in lines if PROGRESS.search(ln)]
    trial = pruned_trial(exp)
    assert {PROGRESS.search(ln).group(0).split(":")[0] for ln in progress} >= {f"trial {trial}"}, log[-4000:]
    assert len({m.group(0).split(":")[0] for ln in progress if (m := PROGRESS.search(ln))}) == 2, log[-4000:]
    assert re.search(rf"^{trial} +PRUNED", log, re.MULTILINE), log[-4000:]


def test_pruned_trial_keeps_every_evaluation_in_one_tensorboard_run(search):
    """The trial ASHA stopped: every evaluation it reported is a scalar in its TensorBoard event file, and its
    folder holds exactly one TensorBoard run (the trainer's ``run/tb``; none written by Ray Tune beside it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp, _ = search
    trial = pruned_trial(exp)
    folder = exp / f"trial_{trial}"
    runs = {p.parent for p in folder.rglob("events.out.tfevents.*")}
    assert runs == {folder / "run" / "tb"}, runs
    reported = [json.loads(ln) for ln in (folder / "result.json").read_text().splitlines()]
    reported_steps = [r["step"] for r in reported if not r.get("final")]
    assert reported_steps and max(reported_steps) < 4 and not any(r.get("final") for r in reported)  # stopped early
    events = EventAccumulator(str(folder / "run" / "tb"))
    events.Reload()
    logged = [json.loads(ln)["step"] for ln in (folder / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(ln)["kind"] == "val"]
    for tag in ("val/psnr", "val/lpips", "val/score"):
        steps = [e.step for e in events.Scalars(tag)]
        assert set(reported_steps) <= set(steps) <= set(logged) and len(steps) == len(set(steps)), (tag, steps)
