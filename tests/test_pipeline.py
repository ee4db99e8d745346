"""The whole study on a real 2-node local Ray cluster: preflight -> prepare -> pretrain -> trials -> export under
``ray job submit``, with the driver SIGKILLed during prepare and during pretrain and ``--resume``d each time.

One head (2 CPUs) and a second node (1 CPU, custom resource ``second_node``) joined with ``ray start --address``;
the space's trials and pretrain run ask for ``second_node``, so every GPU-stage task runs on the second node and
its output must reach the storage folder. The kill points are deterministic: ``ISP_SEARCH_HOLD=<stage>`` makes
that stage write ``<exp>/hold-<stage>`` after its first piece of work and wait (``isp_search.search.faults``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from raycluster import BIN, ENV, kill_tree, processes_under, running_head, tracebacks
from studycheck import selection_is_one_evaluation

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
TINY = ("{backbone_weights: random, data.patch_size: 32, features.vit_img_size: 32, train.batch_size: 2, "
        "train.log_interval: 1, data.eval_limit: 2, data.workers: 0, data.n_val: null, data.n_test: null, ")


@pytest.fixture(scope="module")
def cluster():
    body = running_head()
    head = next(body)
    head.add_node({"second_node": 1})
    yield head
    body.close()  # stops every process started for the head and the node


def write_space(tmp: Path) -> Path:
    """A small copy of search_spaces/efficient_isp_unpaired_mai2022.yaml: the paper configs, tiny budgets."""
    text = f"""\
name: eisp_small
base:
  config: {PAPER / 'efficient_isp_unpaired_mai2022.yaml'}
  overrides: {TINY}train.steps: 2, train.eval_interval: 1, optim.g_lr: 1.0}}   # destructive: the start stays best
pretrain:
  config: {PAPER / 'efficient_isp_pretrain_mai2022.yaml'}
  overrides: {TINY}train.steps: 4, train.eval_interval: 2}}
space:
  optim.d_color_lr: {{type: float, low: 1.0e-6, high: 1.0e-4, log: true}}
  optim.g_beta1: {{type: categorical, choices: [0.0, 0.5], also: [optim.d_color_beta1, optim.d_texture_beta1]}}
  data.demosaicer: {{type: categorical, choices: [menon2007, opencv_bilinear]}}
search:
  sampler: tpe
  num_samples: 1              # one trial is enough here: prepare covers every choice whatever the trials draw
  max_concurrent: 1
  max_failures: 1
  points_to_evaluate:
    - {{optim.d_color_lr: 1.0e-5, optim.g_beta1: 0.5, data.demosaicer: opencv_bilinear}}
scheduler: {{type: none}}
confirm: {{seeds: 1}}         # the default point trained once more, with the next seed
resources: {{cpu: 1, custom: {{second_node: 1}}}}
export: {{top_k: 1, formats: [tflite], gate_size: [32, 32], deploy_size: [32, 32], runs: 2, threads: 1}}
"""
    p = tmp / "space.yaml"
    p.write_text(text)
    return p


def submit(head, tmp: Path, space: Path, name: str, data: Path, *extra: str, hold: str | None = None,
           log: Path) -> subprocess.Popen:
    """``ray job submit`` as the README shows it: the repo as working dir, absolute storage and results."""
    env_vars = {"ISP_SEARCH_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if hold:
        env_vars["ISP_SEARCH_HOLD"] = hold
    runtime = {"env_vars": env_vars, "excludes": ["/.venv/", "/data/", "/results/", "/runs/", "/.git/"]}
    cmd = [str(BIN / "ray"), "job", "submit", f"--address=http://127.0.0.1:{head.dash}", f"--working-dir={ROOT}",
           f"--runtime-env-json={json.dumps(runtime)}", "--", str(BIN / "isp-search"), "search", str(space),
           "--name", name, "--storage", str(tmp / "exp"), "--results", str(tmp / "results"),
           "--set", f"data.root={data}", *extra]
    return subprocess.Popen(cmd, env=ENV, cwd=tmp, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_file(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    end = time.time() + timeout
    while time.time() < end and not path.exists():
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    assert path.exists(), f"no {path.name}\n{log.read_text()[-4000:]}"


def kill_driver(name: str, client: subprocess.Popen) -> None:
    """SIGKILL the job's driver (the entrypoint, found by the unique experiment name), then the submit client."""
    drivers = [p for p in processes_under(name) if "submit" not in " ".join(p.cmdline())]
    assert drivers, f"no driver process naming {name}"
    kill_tree(drivers, signal.SIGKILL)
    client.wait(timeout=60)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.ray
@pytest.mark.slow
def test_study_killed_in_prepare_and_in_pretrain_then_resumed(cluster, tmp_path):
    """preflight -> prepare -> pretrain -> trial -> export, driven by `ray job submit`; the driver is killed
    while a reference store is half built and while the pretrain run is between checkpoints; each --resume
    carries on, and the finished study holds every trial once, started from the pretrain run."""
    from isp_search.data.synth import synthesize
    from isp_search.export.leaderboard import read
    from isp_search.provenance import code_identity
    from isp_search.search.optuna_storage import load_study

    data = synthesize(tmp_path / "data" / "mai2022", "mai2022", n_train=8, n_val=4, n_test=4, seed=11, size=64)
    space = write_space(tmp_path)
    name = f"pl-{secrets.token_hex(4)}"  # unique on this machine: finds exactly our driver's processes
    exp = tmp_path / "exp" / name
    t0 = time.time()

    log1 = tmp_path / "job1.log"  # 1. killed in prepare, the first store half written
    job = submit(cluster, tmp_path, space, name, data, hold="prepare", log=log1)
    wait_file(exp / "hold-prepare", job, log1)
    assert not (exp / "prepare.json").exists()
    kill_driver(name, job)
    assert any(p.name.startswith(".") and p.is_dir() for p in (tmp_path / "cache").iterdir())  # half-built store

    log2 = tmp_path / "job2.log"  # 2. resumed, killed in pretrain after its first checkpoint
    job = submit(cluster, tmp_path, space, name, data, "--resume", hold="pretrain", log=log2)
    wait_file(exp / "hold-pretrain", job, log2)
    kill_driver(name, job)
    (pre_dir,) = (tmp_path / "exp" / "pretrain").iterdir()
    assert (pre_dir / "checkpoints" / "last.pt").is_file() and not (pre_dir / "summary.json").exists()

    log3 = tmp_path / "job3.log"  # 3. resumed, killed in the confirmation stage after its seed run's checkpoint
    job = submit(cluster, tmp_path, space, name, data, "--resume", hold="confirm", log=log3)
    wait_file(exp / "hold-confirm", job, log3, timeout=420)
    kill_driver(name, job)
    (seed_dir,) = (exp / "confirm").iterdir()
    assert (seed_dir / "checkpoints" / "last.pt").is_file() and not (seed_dir / "summary.json").exists()

    log3b = tmp_path / "job3b.log"  # 4. resumed to the end
    job = submit(cluster, tmp_path, space, name, data, "--resume", log=log3b)
    assert job.wait(timeout=420) == 0, log3b.read_text()[-5000:]
    final = log3b.read_text()
    out = log3.read_text() + final
    print(f"study with three kills: {time.time() - t0:.0f} s")
    assert "succeeded" in final and "Pareto-optimal trials" in final, final[-3000:]
    assert not tracebacks(out), "\n\n".join(tracebacks(out))[-5000:]
    assert "(resuming)" in out and json.loads((pre_dir / "summary.json").read_text())["step"] == 4
    # the confirmation run: resumed from its step-1 checkpoint, each step once, with the next seed
    seed_steps = [json.loads(line)["step"] for line in (seed_dir / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line)["kind"] == "train"]
    assert seed_steps == [1, 2], seed_steps
    (confirmed,) = json.loads((exp / "confirm.json").read_text()).values()
    assert confirmed["n"] == 2 and confirmed["runs"][1] == str(seed_dir) and not confirmed["failed"]
    assert "confirmed over seeds" in final
    steps = [json.loads(line)["step"] for line in (pre_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4], steps  # continued from its step-2 checkpoint, not restarted

    # every trial exactly once, COMPLETE
    meta = json.loads((exp / "isp_search.json").read_text())
    trials = load_study(meta["study_name"], meta["optuna_storage"]).trials
    assert [t.state.name for t in trials] == ["COMPLETE"], [t.user_attrs for t in trials]
    ids = {t.user_attrs["ray_trial_id"] for t in trials}
    assert len(ids) == 1 and {p.name for p in exp.glob("trial_*")} == {f"trial_{i}" for i in ids}

    # the trials started from the pretrain run: its checkpoint's hash in each trial's run.json
    record = json.loads((exp / "pretrain.json").read_text())
    assert Path(record["init_from"]) == pre_dir and record["sha256"] == sha256(pre_dir / "checkpoints" / "best.pt")
    runs = [exp / f"trial_{i}" / "run" for i in ids]
    for run in runs:
        info = json.loads((run / "run.json").read_text())
        assert info["init_from"] == str(pre_dir) and info["init_sha256"] == record["sha256"], info
        assert info["code_sha256"] == code_identity()["code_sha256"]  # the job ran this code, without .git

    # the reference cache: both demosaicers x train/val/test, built once, before the first trial started
    stores = json.loads((exp / "prepare.json").read_text())["stores"]
    assert {(s["demosaicer"], s["split"]) for s in stores} == {
        (d, s) for d in ("menon2007", "opencv_bilinear") for s in ("train", "val", "test")}
    assert all(s["built"] for s in stores)
    first_trial = min((run / "config.yaml").stat().st_mtime for run in runs)
    assert max(s["finished"] for s in stores) < first_trial
    assert "isp-search: built" not in out  # no trial (nor the pretrain run) built a store itself
    assert "recorded by this study" in out  # the third run skipped the finished prepare stage

    # the trials ran on the second node (their resources exist only there); their output is in storage
    for run in runs:
        assert list((run / "tb").glob("events.out.tfevents.*")) and list((run / "samples").glob("step_*.png"))
    # slim checkpoints: the reported folder holds the training state once, best.pt is the generator alone
    ck = max(exp.glob("trial_*/checkpoint_*"))
    best = torch.load(ck / "best.pt", map_location="cpu", weights_only=False)
    assert "optim_state" not in best and (ck / "best.pt").stat().st_size * 20 < (ck / "last.pt").stat().st_size

    # the baselines, exported and timed like any model: the pretrain start and the default point (the only trial).
    # The base's g_lr only makes the start worse, so the default's best evaluation is the start itself (step 0):
    # what Optuna was told and its best.pt are that evaluation's, and its deployed weights are the start's, so one
    # row holds both (the row of the trial's last checkpoint would be a second row with other weights)
    rows = {r["model_id"]: r for r in read(tmp_path / "results" / "leaderboard.parquet").to_pylist()}
    start = rows.pop(f"{name}/baseline-start")
    assert not rows and start["kind"] == "baseline" and start["same_weights_as"] == [f"{name}/baseline-default"]
    (tid,) = ids
    assert selection_is_one_evaluation(exp, trials, [{**start, "trial_id": tid}]) == [0]
    assert start["run_dir"] == str(pre_dir) and start["latency_ms"] > 0
    assert start["code_sha256"] == code_identity()["code_sha256"]
    base = json.loads((exp / "baselines.json").read_text())["start"]
    assert start["psnr"] == pytest.approx(base["test"]["psnr"]) and base["val"]["n_images"] == 2

    # 5. the same command submitted again without --resume: refused in one line, nothing touched
    before = tree_digest(tmp_path / "exp"), tree_digest(tmp_path / "results")
    log4 = tmp_path / "job4.log"
    job = submit(cluster, tmp_path, space, name, data, log=log4)
    assert job.wait(timeout=120) != 0
    # Ray prints the job's output, then repeats it in the failed job's status message: one distinct line
    refusal = sorted({ln.strip() for ln in log4.read_text().splitlines() if "isp-search: error:" in ln})
    assert len(refusal) == 1 and "--resume" in refusal[0] and "--name" in refusal[0], log4.read_text()[-2000:]
    assert not tracebacks(log4.read_text())
    assert (tree_digest(tmp_path / "exp"), tree_digest(tmp_path / "results")) == before
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256: equal digests mean byte-identical trees."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_reference_cache_found_from_a_copy_at_another_path(tmp_path):
    """The store key is the files' content: the same data set copied elsewhere reuses the store."""
    from isp_search.commands.prepare import configs_of
    from isp_search.data.cache import content_key
    from isp_search.data.demosaic import ReferenceLook
    from isp_search.data.synth import synthesize
    from isp_search.search import prepare as P

    a = synthesize(tmp_path / "a" / "mai2022", "mai2022", n_train=4, n_val=2, n_test=2, seed=3, size=32)
    b = tmp_path / "elsewhere" / "mai2022"
    shutil.copytree(a, b)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"mode: pretrain\nbackbone_weights: random\ndata: {{root: {a}, format: mai2022}}\n")
    (cfg,), _, _ = configs_of(str(cfg_file))
    first = P.prepare(P.plan([cfg]), workers=2, cache_dir=tmp_path / "cache", quiet=True)
    cfg_file.write_text(cfg_file.read_text().replace(str(a), str(b)))
    (cfg_b,), _, _ = configs_of(str(cfg_file))
    again = P.prepare(P.plan([cfg_b]), workers=2, cache_dir=tmp_path / "cache", quiet=True)
    assert [j.split for j in first] == ["train", "val", "test"] and all(j.built for j in first)
    assert [j.key for j in again] == [j.key for j in first] and not any(j.built for j in again)
    changed = Path(again[0].paths[0])
    changed.write_bytes(changed.read_bytes() + b"\0")  # other bytes (same path, new mtime) -> another store
    assert content_key(again[0].paths, "menon2007", ReferenceLook(), None, tmp_path / "cache") != first[0].key


def test_gan_stage_from_a_random_generator_is_refused(tmp_path, capsys):
    """A paired/unpaired config without model.init_from stops at once, one line naming the fix; the smoke configs
    say model.allow_scratch: true and train."""
    from isp_search.cli import main

    cfg = ROOT / "configs" / "smoke_unpaired.yaml"
    code = main(["train", str(cfg), "--set", "model.allow_scratch=false", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "model.init_from" in err and "model.allow_scratch: true" in err and "pretrain" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was written


def test_object_store_run_folder_is_uploaded_without_checkpoints(tmp_path):
    """With an object-store experiment (here file://, the same pyarrow.fs path as s3://) a trial writes its run
    folder locally and uploads it after each evaluation; checkpoints travel through Ray, not twice."""
    from isp_search.search.trainable import trial_run_dir, upload_run

    local, uri = trial_run_dir(f"file://{tmp_path}/bucket/exp", "abc", str(tmp_path / "worker"))
    assert local == tmp_path / "worker" / "run" and uri == f"file://{tmp_path}/bucket/exp/trial_abc/run"
    assert trial_run_dir(str(tmp_path / "nfs" / "exp"), "abc", "/x") == (tmp_path / "nfs" / "exp" / "trial_abc" / "run",
                                                                         None)
    for rel, data in (("metrics.jsonl", b"{}\n"), ("tb/events.out.tfevents.1", b"e"), ("samples/step_000001.png", b"p"),
                      ("checkpoints/last.pt", b"big")):
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    upload_run(local, uri)
    (local / "metrics.jsonl").write_bytes(b"{}\n{}\n")  # logs grow: copied again
    upload_run(local, uri)
    up = tmp_path / "bucket" / "exp" / "trial_abc" / "run"
    assert sorted(str(p.relative_to(up)) for p in up.rglob("*") if p.is_file()) == [
        "metrics.jsonl", "samples/step_000001.png", "tb/events.out.tfevents.1"]
    assert (up / "metrics.jsonl").read_bytes() == b"{}\n{}\n"
