"""The search on a real local Ray: job submission, Optuna states, divergence, driver kill + --resume, node failure.

One Ray head per module (own ports and temp dir, started with ``ray start``, stopped by pid); drivers run as
``isp-search search`` subprocesses. Trials use the tiny CPU training config, so each takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from raycluster import BIN, ENV, running_head

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CFG = ROOT / "configs" / "smoke_unpaired.yaml"
# Trainer config keys the tests set (names from isp_search.train's TrainConfig).
STEPS, EVAL_EVERY, G_LR = "train.steps", "train.eval_interval", "optim.g_lr"


@pytest.fixture(scope="module")
def head():
    yield from running_head()


def write_space(tmp: Path, *, samples: int, steps: int = 4, points: list[dict] | None = None,
                top_k: int = 0, resources: str = "{cpu: 1}", extra_space: str = "") -> Path:
    """A smoke search space: ``steps`` training steps, evaluated and checkpointed every step."""
    pts = json.dumps(points or [{"optim.d_color_lr": 1e-5}])
    text = f"""\
name: t
base:
  config: {SMOKE_CFG}
  overrides: {{{STEPS}: {steps}, {EVAL_EVERY}: 1}}
space:
  optim.d_color_lr: {{type: float, low: 1e-6, high: 1e-4, log: true}}
{extra_space}search: {{sampler: tpe, seed: 0, num_samples: {samples}, max_concurrent: 1, max_failures: 3,
         points_to_evaluate: {pts}}}
scheduler: {{type: none}}
resources: {resources}
storage: {{path: {tmp / 'exp'}}}
export: {{top_k: {top_k}, formats: [tflite], size: [32, 32], bench_size: [32, 32], runs: 2, threads: 1,
         results: {tmp / 'results'}}}
"""
    p = tmp / "space.yaml"
    p.write_text(text)
    return p


def driver(space: Path, *args: str, address: str | None = None, log: Path) -> subprocess.Popen:
    env = {**ENV, **({"RAY_ADDRESS": address} if address else {})}
    return subprocess.Popen([str(BIN / "isp-search"), "search", str(space), *args], env=env, cwd=space.parent,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def study_trials(exp_dir: Path):
    from isp_search.search.searcher import load_study

    meta = json.loads((exp_dir / "isp_search.json").read_text())
    return load_study(meta["study_name"], meta["optuna_storage"]).trials


def ray_trials(exp_dir: Path) -> dict[str, dict]:
    """Ray's view: trial id -> last result of every trial folder."""
    out = {}
    for d in exp_dir.glob("trial_*"):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").exists() else []
        out[d.name.removeprefix("trial_")] = json.loads(lines[-1]) if lines else {}
    return out


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def test_job_submit_search_with_a_diverging_trial(head, tmp_path):
    """`ray job submit` against a real head: 3 trials, the second forced to diverge (a huge generator learning
    rate): it is FAIL with its reason, the others COMPLETE, and the Pareto trial's row lands in the leaderboard
    with the search and trial ids."""
    points = [{"optim.d_color_lr": 1e-5, G_LR: 5e-4}, {"optim.d_color_lr": 2e-6, G_LR: 1e12},
              {"optim.d_color_lr": 3e-5, G_LR: 5e-4}]
    space = write_space(tmp_path, samples=3, top_k=1, points=points,
                        extra_space=f"  {G_LR}: {{type: categorical, choices: [5.0e-4, 1.0e+12]}}\n")
    t0 = time.time()
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address=http://127.0.0.1:{head.dash}", "--", str(BIN / "isp-search"),
         "search", str(space), "--name", "job1"],
        env=ENV, capture_output=True, text=True, timeout=420, cwd=tmp_path)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-5000:]
    assert "succeeded" in out and "Pareto-optimal trials" in out and "leaderboard.html" in out, out[-3000:]
    trials = study_trials(tmp_path / "exp" / "job1")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"], [t.user_attrs for t in trials]
    assert trials[1].params[G_LR] == 1e12 and trials[1].user_attrs["fail_reason"].startswith("diverged"), trials[1]
    from isp_search.export.leaderboard import read

    rows = read(tmp_path / "results" / "leaderboard.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["search_id"] == "job1"
    assert rows[0]["trial_id"] in {t.user_attrs["ray_trial_id"] for t in trials if t.state.name == "COMPLETE"}
    assert (tmp_path / "results" / "leaderboard.html").is_file()
    assert (tmp_path / "results" / "job1" / "plots" / "pareto_front.png").is_file()
    print(f"job submit search: {time.time() - t0:.0f} s")


def test_driver_killed_then_resume(head, tmp_path):
    """SIGKILL the driver mid-search; --resume finishes it and every trial appears exactly once."""
    space = write_space(tmp_path, samples=3, steps=6)
    exp = tmp_path / "exp" / "r1"
    log = tmp_path / "first.log"
    p = driver(space, "--name", "r1", address=head.address, log=log)
    # kill once one trial is done and the next has checkpointed
    wait_for(lambda: sum(1 for r in ray_trials(exp).values() if r.get("final")) >= 1
             and sum(1 for r in ray_trials(exp).values() if not r.get("final") and r.get("step")) >= 1,
             240, "a finished and a running trial", p, log)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    before = ray_trials(exp)
    log2 = tmp_path / "resume.log"
    p2 = driver(space, "--name", "r1", "--resume", address=head.address, log=log2)
    assert p2.wait(timeout=300) == 0, log2.read_text()[-4000:]
    after = ray_trials(exp)
    assert set(before) <= set(after) and len(after) == 3, (before, after)
    assert all(r.get("final") and r.get("trial_status") == "completed" for r in after.values()), after
    trials = study_trials(exp)
    complete = [t.user_attrs["ray_trial_id"] for t in trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(after)  # each Ray trial exactly once in the study
    for t in trials:  # anything else is an Optuna trial asked just before the kill, closed as such
        assert t.state.name == "COMPLETE" or "orphaned" in t.user_attrs.get("fail_reason", ""), t


def test_worker_node_killed_trial_continues_from_checkpoint(head, tmp_path):
    """Two raylets on loopback; the node running the trial is SIGKILLed after a checkpoint; the trial restarts on
    a replacement node from that checkpoint and the search finishes."""
    marker = head.add_node({"trial_slot": 1})
    space = write_space(tmp_path, samples=1, steps=6, resources="{cpu: 1, custom: {trial_slot: 1}}")
    exp = tmp_path / "exp" / "n1"
    log = tmp_path / "node.log"
    p = driver(space, "--name", "n1", address=head.address, log=log)
    wait_for(lambda: any((r.get("step") or 0) >= 2 for r in ray_trials(exp).values()), 240,
             "two checkpointed evaluations on the worker node", p, log)
    assert head.kill_node(marker) >= 1
    head.add_node({"trial_slot": 1})  # the replacement machine
    assert p.wait(timeout=300) == 0, log.read_text()[-4000:]
    (result,) = ray_trials(exp).values()
    assert result["final"] and result["trial_status"] == "completed"
    assert result["iterations_since_restore"] < result["training_iteration"], result  # continued, not restarted
    (t,) = study_trials(exp)
    assert t.state.name == "COMPLETE"
