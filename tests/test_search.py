"""The search on a real local Ray: job submission, Optuna states, divergence, driver kill + --resume, node failure.

One Ray head per module (own ports and temp dir, started with ``ray start``, stopped by pid); drivers run as
``isp-search search`` subprocesses. Trials use the tiny CPU training config, so each takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from raycluster import BIN, ENV, running_head
from studycheck import selection_is_one_evaluation

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CFG = ROOT / "configs" / "smoke_unpaired.yaml"
# Trainer config keys the tests set (names from isp_search.train's TrainConfig).
STEPS, EVAL_EVERY, G_LR = "train.steps", "train.eval_interval", "optim.g_lr"


@pytest.fixture(scope="module")
def head():
    yield from running_head()


def write_space(tmp: Path, *, samples: int, steps: int = 4, points: list[dict] | None = None,
                top_k: int = 0, resources: str = "{cpu: 1}", extra_space: str = "", storage: str | None = None,
                overrides: str = "") -> Path:
    """A smoke search space: ``steps`` training steps, evaluated and checkpointed every step."""
    pts = json.dumps(points or [{"optim.d_color_lr": 1e-5}])
    storage = storage or str(tmp / "exp")
    text = f"""\
name: t
base:
  config: {SMOKE_CFG}
  overrides: {{{STEPS}: {steps}, {EVAL_EVERY}: 1{overrides}}}
space:
  optim.d_color_lr: {{type: float, low: 1e-6, high: 1e-4, log: true}}
{extra_space}search: {{sampler: tpe, seed: 0, num_samples: {samples}, max_concurrent: 1, max_failures: 3,
         points_to_evaluate: {pts}}}
scheduler: {{type: none}}
confirm: {{seeds: 0}}
resources: {resources}
storage: {{path: {storage}}}
export: {{top_k: {top_k}, formats: [tflite], gate_size: [32, 32], deploy_size: [32, 32], runs: 2, threads: 1,
         results: {tmp / 'results'}}}
"""
    p = tmp / "space.yaml"
    p.write_text(text)
    return p


def driver(space: Path, *args: str, address: str | None = None, log: Path, env: dict | None = None
           ) -> subprocess.Popen:
    env = {**ENV, **({"RAY_ADDRESS": address} if address else {}), **(env or {})}
    return subprocess.Popen([str(BIN / "isp-search"), "search", str(space), *args], env=env, cwd=space.parent,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def study_trials(exp_dir: Path):
    from isp_search.search.optuna_storage import load_study

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
    with the search and trial ids; a `--resume` of the finished search does not add the row twice."""
    points = [{"optim.d_color_lr": 1e-5, G_LR: 5e-4}, {"optim.d_color_lr": 2e-6, G_LR: 1e12},
              {"optim.d_color_lr": 3e-5, G_LR: 5e-4}]
    space = write_space(tmp_path, samples=3, top_k=1, points=points,
                        extra_space=f"  {G_LR}: {{type: categorical, choices: [5.0e-4, 1.0e+12]}}\n")
    t0 = time.time()
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address=http://127.0.0.1:{head.dash}", "--", str(BIN / "isp-search"),
         "search", str(space), "--name", "job1"],
        env=ENV, capture_output=True, text=True, timeout=420, cwd=tmp_path, check=False)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-5000:]
    assert "succeeded" in out and "Pareto-optimal trials" in out and "leaderboard.html" in out, out[-3000:]
    trials = study_trials(tmp_path / "exp" / "job1")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"], [t.user_attrs for t in trials]
    assert trials[1].params[G_LR] == 1e12 and trials[1].user_attrs["fail_reason"].startswith("diverged"), trials[1]
    from isp_search.export.leaderboard import read

    rows = read(tmp_path / "results" / "leaderboard.parquet").to_pylist()
    # the default point (the first of points_to_evaluate) is a baseline row, exported and timed like any model;
    # the Pareto trial's own row, unless it is that very trial (then one row: same weights)
    (default,) = [r for r in rows if r["kind"] == "baseline"]
    assert default["model_id"] == "job1/baseline-default" and default["trial_id"] == trials[0].user_attrs["ray_trial_id"]
    assert default["latency_ms"] > 0 and json.loads(default["config"])["baseline"] == "default"
    searched = [r for r in rows if r["kind"] == "search"]
    assert len(searched) <= 1 and len(rows) == 1 + len(searched) and all(r["search_id"] == "job1" for r in rows)
    assert all(r["trial_id"] in {t.user_attrs["ray_trial_id"] for t in trials if t.state.name == "COMPLETE"}
               for r in searched)
    assert "baselines (measured on the trials' val and test subsets" in out and "default" in out
    assert (tmp_path / "results" / "leaderboard.html").is_file()
    selection_is_one_evaluation(tmp_path / "exp" / "job1", trials, rows)
    _study_value_reads_it_back(tmp_path / "exp" / "job1", trials)
    assert (tmp_path / "results" / "job1" / "plots" / "pareto_front.png").is_file()
    print(f"job submit search: {time.time() - t0:.0f} s")
    # re-export after --resume of the finished search: the row is keyed by model id, not added again
    log = tmp_path / "again.log"
    assert driver(space, "--name", "job1", "--resume", address=head.address, log=log).wait(timeout=300) == 0
    assert "already on the leaderboard" in log.read_text(), log.read_text()[-3000:]
    assert len(read(tmp_path / "results" / "leaderboard.parquet")) == len(rows)


def _study_value_reads_it_back(exp: Path, trials) -> None:
    """`isp-search study-value`'s reading of the finished study: its states, the hypervolume beyond the start
    from the COMPLETE trials' values, each stage's time and the runs' own time rows."""
    from isp_search.diagnostics.scheduler_sim import hypervolume
    from isp_search.diagnostics.study_value import format_report, read_study

    v = read_study(os.path.relpath(exp))  # as typed: `isp-search study-value results/search/synth-tpe`
    assert v.states == {"COMPLETE": 2, "FAIL": 1} and v.sampler == "tpe" and v.slots == 1
    ref = tuple(trials[0].values)  # no start (trained from scratch): the default point, trial #0
    assert v.hypervolume_at(3) == hypervolume([tuple(t.values) for t in trials if t.state.name == "COMPLETE"], ref)
    assert {"prepare", "nodes", "pretrain", "search", "confirm", "export"} <= set(v.stages)
    assert v.run_time["search"]["train_s"] > 0 and v.run_time["search"]["eval_s"] > 0
    text = format_report([v])
    assert "beyond the reference point (trial #0)" in text and "where job1's wall clock went" in text, text


def final_states(exp_dir: Path) -> dict[str, str]:
    """Ray trial id -> its final Optuna state (a re-run's retry trial replaces the one it retries)."""
    from isp_search.search.optuna_storage import load_study
    from isp_search.search.reconcile import RAY_TRIAL_ATTR, final_trials

    meta = json.loads((exp_dir / "isp_search.json").read_text())
    study = load_study(meta["study_name"], meta["optuna_storage"])
    rows = [(t.user_attrs.get(RAY_TRIAL_ATTR), t.state.name) for t in final_trials(study)]
    assert len({r for r, _ in rows}) == len(rows), rows  # every Ray trial exactly once
    return dict(rows)


def any_complete(exp_dir: Path) -> bool:
    try:
        return any(t.state.name == "COMPLETE" for t in study_trials(exp_dir))
    except (FileNotFoundError, OSError, ValueError, KeyError):  # the journal is not written yet
        return False


def test_driver_killed_right_after_a_complete_trial_resume_extends(head, tmp_path):
    """Object-store-like storage (file://, the journal on the driver and mirrored): the driver is SIGKILLed the
    moment the first trial is COMPLETE in the Optuna journal, before Ray snapshots it (snapshots only when forced);
    `--resume --num-samples 3` replays that trial (not re-told, not re-trained), takes over any Optuna trial asked
    before the kill, runs the rest, and ends with 3 trials, each exactly once COMPLETE, no traceback."""
    space = write_space(tmp_path, samples=2, steps=3, storage=f"file://{tmp_path / 'exp'}")
    exp = tmp_path / "exp" / "r1"
    home = {"HOME": str(tmp_path / "home")}  # the local journal goes to ~/.cache/isp-search/optuna
    log = tmp_path / "first.log"
    p = driver(space, "--name", "r1", address=head.address, log=log, env={**home, "TUNE_GLOBAL_CHECKPOINT_S": "3600"})
    wait_for(lambda: any_complete(exp), 300, "a COMPLETE trial in the Optuna journal", p, log)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    log2 = tmp_path / "resume.log"
    p2 = driver(space, "--name", "r1", "--resume", "--num-samples", "3", address=head.address, log=log2, env=home)
    assert p2.wait(timeout=420) == 0, log2.read_text()[-4000:]
    out = log2.read_text()
    driver_tracebacks = [line for line in out.splitlines() if "Traceback" in line and "pid=" not in line]
    assert not driver_tracebacks and "UpdateFinishedTrialError" not in out and "TuneError" not in out, out[-4000:]
    assert "extended from 2 to 3 trials" in out and "already final in the Optuna study" in out, out[-4000:]
    from isp_search.search.resume import ray_statuses

    known = ray_statuses(str(exp))  # Ray's trials (a trial started just before the kill left only a folder)
    assert sorted(known.values()) == ["TERMINATED"] * 3, known
    after = {tid: r for tid, r in ray_trials(exp).items() if tid in known}
    assert len(after) == 3 and all(r.get("final") and r.get("trial_status") == "completed" for r in after.values())
    assert sum(1 for r in after.values() if r.get("reconciled")) == 1, after  # replayed, not trained again
    assert final_states(exp) == {rid: "COMPLETE" for rid in after}
    assert len(study_trials(exp)) == 3  # nothing orphaned, nothing told twice
    meta = json.loads((exp / "isp_search.json").read_text())
    assert (exp / "optuna.journal").read_bytes() == Path(meta["optuna_storage"]).read_bytes()  # mirrored


def test_errored_trial_fixed_then_resumed_ends_complete(head, tmp_path):
    """A deterministic error only a trial can meet (model.init_from is a corrupt checkpoint file): the trial fails
    once (not retried), Optuna keeps the real cause as fail_reason, the table shows it and the search exits 1. The
    file is replaced; `--resume` re-runs the trial: COMPLETE in Optuna (a retry of the FAIL trial), on the Pareto
    front."""
    init = tmp_path / "init.pt"
    init.write_bytes(b"not a checkpoint")
    space = write_space(tmp_path, samples=1, steps=2, overrides=f", model.init_from: {init}")
    exp = tmp_path / "exp" / "e1"
    log = tmp_path / "error.log"
    p = driver(space, "--name", "e1", address=head.address, log=log)
    assert p.wait(timeout=300) == 1, log.read_text()[-4000:]
    (t,) = study_trials(exp)
    reason = t.user_attrs["fail_reason"]
    assert t.state.name == "FAIL" and reason.startswith(f"{init}: not a readable PyTorch checkpoint"), t
    assert f"failed trial #0 {t.user_attrs['ray_trial_id']}: {init}: not a readable" in log.read_text()
    # the moment it fails, one line (its cause; the traceback stays in error.txt), not Ray's traceback
    assert f"\ntrial {t.user_attrs['ray_trial_id']}: {init}: not a readable" in log.read_text()
    assert "Trial task failed" not in log.read_text(), log.read_text()[-4000:]
    (trial_dir,) = exp.glob("trial_*")
    assert (trial_dir / "error.txt").read_text().count("Failure #") == 1  # deterministic: not retried
    from isp_search.models import create_generator, spec_for
    from isp_search.models.checkpoint import save_generator

    save_generator(init, create_generator("efficient_isp"), "efficient_isp", spec_for("efficient_isp").preset)
    log2 = tmp_path / "fixed.log"
    p2 = driver(space, "--name", "e1", "--resume", address=head.address, log=log2)
    assert p2.wait(timeout=300) == 0, log2.read_text()[-4000:]
    assert final_states(exp) == {t.user_attrs["ray_trial_id"]: "COMPLETE"}
    old, retry = study_trials(exp)
    assert old.state.name == "FAIL" and retry.user_attrs["retry_of"] == old.number and retry.params == old.params
    out = log2.read_text()
    assert "(1 COMPLETE)" in out and "failed trial" not in out, out[-3000:]  # the superseded FAIL is not listed
    pareto = out[out.index("Pareto-optimal trials"):]
    assert f"\n1  {t.user_attrs['ray_trial_id']}" in pareto, pareto  # Optuna trial #1 on the Pareto front


def test_preflight_refuses_before_anything_starts(head, tmp_path):
    """`isp-search search` on a cluster: a missing data root and a GPU the cluster lacks are both listed, one line
    each with file, key and fix, exit 2, and nothing is started (no experiment folder, no Optuna study)."""
    space = write_space(tmp_path, samples=1, resources="{cpu: 1, gpu: 1}",
                        overrides=f", data.root: {tmp_path / 'nowhere'}, data.synthetic: false")
    r = subprocess.run([str(BIN / "isp-search"), "search", str(space), "--name", "p1"], capture_output=True,
                       text=True, env={**ENV, "RAY_ADDRESS": head.address}, cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    lines = err[err.index("isp-search: error: preflight: 2 problem(s), nothing was started:") + 1:]
    assert len(lines) == 2, r.stderr
    assert re.search(r"space\.yaml:4: base\.overrides\.data\.root: no such folder .*/nowhere; fix: ", lines[0])
    assert re.search(r"space\.yaml:\d+: resources\.gpu: a trial asks for 1 GPU but the cluster has 0 in all; fix: ",
                     lines[1])
    assert not (tmp_path / "exp").exists() and "Traceback" not in r.stderr


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
    ((trial_id, result),) = ray_trials(exp).items()
    assert result["final"] and result["trial_status"] == "completed"
    assert result["iterations_since_restore"] < result["training_iteration"], result  # continued, not restarted
    (t,) = study_trials(exp)
    assert t.state.name == "COMPLETE"
    # the job log says it in two lines, without a traceback: the loss (driver) and the restart (the trial)
    out = log.read_text()
    assert re.search(rf"^trial {trial_id}: its worker was lost \(\w+Error\); attempt 2 starts from its last "
                     "checkpoint$", out, re.MULTILINE), out[-4000:]
    assert re.search(rf"\) trial {trial_id}: attempt 2 after a restart, from step [1-9]\d*$", out, re.MULTILINE), out[-4000:]
    assert not [ln for ln in out.splitlines() if "Traceback" in ln and "pid=" not in ln], out[-4000:]
