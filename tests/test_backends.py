"""Real storage backends under a real search: the Optuna study in PostgreSQL, the experiment in an S3 bucket.

PostgreSQL is Debian's ``postgresql`` server (scripts/system-deps.sh installs it): a throw-away cluster made by
``initdb`` in a temp dir, on a free port, run as the ``postgres`` user when the tests run as root (the server
refuses root), stopped with ``pg_ctl stop`` and then by pid. S3 is moto's server mode (``moto[server]``), an
*emulator* of the S3 API on a free port, not AWS: it shows that every read and write (driver, Ray Tune, trials)
goes through pyarrow's S3 client to the endpoint named by ``AWS_ENDPOINT_URL``, not how real S3 behaves under load
or permissions. Each test runs a smoke study whose driver is SIGKILLed after a COMPLETE trial, then ``--resume``s
it: every trial ends exactly once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import raycluster
from raycluster import BIN, ENV, free_port, running_head
from test_search import driver, wait_for, write_space

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BUCKET = "isp-search-test"
SAMPLES = 2


def _pg_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """``postgresql://`` URL of an empty database on a PostgreSQL server of our own."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl); scripts/system-deps.sh installs Debian's postgresql")
    tmp = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: the socket path must stay < 108 chars
    as_user = []
    if os.geteuid() == 0:  # "initdb: cannot be run as root": the package's system user owns the cluster
        shutil.chown(tmp, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = tmp / "data", free_port()

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, str(bindir / tool), *args], capture_output=True, text=True, timeout=120,
                              check=False)

    r = pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    assert r.returncode == 0, r.stdout + r.stderr
    pid = None
    try:
        r = pg("pg_ctl", "-D", str(data), "-l", str(tmp / "server.log"), "-w", "-t", "60", "-o",
               f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        log = (tmp / "server.log").read_text() if (tmp / "server.log").exists() else ""
        assert r.returncode == 0, r.stdout + r.stderr + log
        pid = int((data / "postmaster.pid").read_text().split()[0])
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE isp_search")
        yield f"postgresql://postgres@127.0.0.1:{port}/isp_search"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop")
        if pid is not None and psutil.pid_exists(pid):
            raycluster.kill_tree([psutil.Process(pid)])
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """Environment of a client of moto's S3 emulator (dummy credentials, its endpoint); the bucket exists."""
    from pyarrow import fs as pafs

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        admin = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="testing",
                                  secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        end = time.time() + 60
        while True:
            try:
                admin.create_dir(BUCKET)
                break
            except OSError:
                assert proc.poll() is None and time.time() < end, log.read_text()[-3000:]
                time.sleep(0.5)
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: moto_server and nothing else
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def head(s3):
    """A Ray head whose every process (trials included) sees the S3 endpoint, as every box of a cluster must."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(raycluster, "ENV", {**raycluster.ENV, **s3})
        yield from running_head()


def set_storage(space: Path, storage: str) -> None:
    """Replace the ``storage:`` line of a space written by ``write_space``."""
    text, n = re.subn(r"^storage: .*$", f"storage: {storage}", space.read_text(), flags=re.MULTILINE)
    assert n == 1, text
    space.write_text(text)


def final_states(study) -> dict[str, str]:
    """Ray trial id -> its final Optuna state; asserts that no Ray trial has two final Optuna trials."""
    from isp_search.search.reconcile import RAY_TRIAL_ATTR, final_trials

    rows = [(t.user_attrs.get(RAY_TRIAL_ATTR), t.state.name) for t in final_trials(study)]
    assert len({r for r, _ in rows}) == len(rows), rows
    return dict(rows)


def kill_after_a_complete_trial(space: Path, name: str, done, env: dict, log: Path) -> None:
    p = driver(space, "--name", name, log=log, env=env)
    wait_for(done, 300, "a COMPLETE trial", p, log)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)


def resume(space: Path, name: str, env: dict, log: Path) -> str:
    p = driver(space, "--name", name, "--resume", log=log, env=env)
    assert p.wait(timeout=420) == 0, log.read_text()[-4000:]
    out = log.read_text()
    assert not [ln for ln in out.splitlines() if "Traceback" in ln and "pid=" not in ln], out[-4000:]
    return out


def test_postgres_study_survives_a_driver_kill_and_resume(head, postgres, tmp_path):
    """``storage.optuna: postgresql://...`` on a real PostgreSQL server: the driver is SIGKILLed once a trial is
    COMPLETE in the database; ``--resume`` reopens the same study there and ends with 2 Ray trials, each with one
    trial folder and exactly one final Optuna trial, COMPLETE (counted by SQL in Postgres); no journal file."""
    import psycopg

    from isp_search.search.optuna_storage import load_study
    from isp_search.search.resume import ray_statuses

    space = write_space(tmp_path, samples=SAMPLES, steps=2)
    set_storage(space, f"{{path: {tmp_path / 'exp'}, optuna: '{postgres}'}}")
    exp = tmp_path / "exp" / "pg1"
    env = {**ENV, "RAY_ADDRESS": head.address, "HOME": str(tmp_path / "home")}

    def study():
        meta = json.loads((exp / "isp_search.json").read_text())
        return load_study(meta["study_name"], meta["optuna_storage"])

    def complete() -> bool:
        try:
            return any(t.state.name == "COMPLETE" for t in study().trials)
        except (OSError, ValueError, KeyError):  # isp_search.json or the study not there yet
            return False

    t0 = time.time()
    kill_after_a_complete_trial(space, "pg1", complete, env, tmp_path / "first.log")
    resume(space, "pg1", env, tmp_path / "resume.log")
    meta = json.loads((exp / "isp_search.json").read_text())
    assert meta["optuna_storage"] == postgres
    assert not list(tmp_path.rglob("*.journal"))
    known = ray_statuses(str(exp))
    assert sorted(known.values()) == ["TERMINATED"] * SAMPLES, known
    assert final_states(study()) == {rid: "COMPLETE" for rid in known}
    assert len(study().trials) == SAMPLES  # nothing orphaned, nothing told twice
    for rid in known:
        lines = (exp / f"trial_{rid}" / "result.json").read_text().splitlines()
        assert json.loads(lines[-1])["trial_status"] == "completed", lines[-1]
    with psycopg.connect(postgres) as c:  # the study is in Postgres itself, not in a file beside it
        rows = c.execute("SELECT t.state, count(*) FROM trials t JOIN studies s USING (study_id) "
                         "WHERE s.study_name = %s GROUP BY t.state", (meta["study_name"],)).fetchall()
    assert rows == [("COMPLETE", SAMPLES)], rows
    print(f"postgres study with a driver kill and --resume: {time.time() - t0:.0f} s")


def test_s3_experiment_survives_a_driver_kill_and_resume_from_the_bucket(head, s3, tmp_path, monkeypatch):
    """``--storage s3://bucket/prefix`` on moto's S3 emulator: trial folders, checkpoints, run folders and the
    mirrored Optuna journal land in the bucket (listed through pyarrow). The driver is SIGKILLed once the bucket's
    journal holds a COMPLETE trial and its local journal is deleted (a fresh driver machine); ``--resume`` restores
    the journal from the bucket and ends with 2 Ray trials, each exactly once COMPLETE; nothing else is local."""
    from pyarrow import fs as pafs

    from isp_search.search.experiment import read_meta
    from isp_search.search.optuna_storage import load_study
    from isp_search.search.resume import ray_statuses

    for k, v in s3.items():
        monkeypatch.setenv(k, v)  # this process reads the bucket too
    storage = f"s3://{BUCKET}/{tmp_path.name}"
    space = write_space(tmp_path, samples=SAMPLES, steps=2)
    set_storage(space, f"{{path: '{storage}'}}")
    exp_uri = f"{storage}/s31"
    bucket, root = pafs.FileSystem.from_uri(exp_uri)
    env = {**ENV, **s3, "RAY_ADDRESS": head.address}

    def mirrored_study():
        """The study as the bucket's copy of the journal has it."""
        copy = tmp_path / "mirror.journal"
        with bucket.open_input_stream(f"{root}/optuna.journal") as src:
            copy.write_bytes(src.read())
        return load_study(read_meta(exp_uri)["study_name"], str(copy))

    def complete() -> bool:
        try:
            return any(t.state.name == "COMPLETE" for t in mirrored_study().trials)
        except (OSError, ValueError, KeyError, RuntimeError):  # not uploaded yet
            return False

    t0 = time.time()
    env["HOME"] = str(tmp_path / "home")  # the driver keeps the journal in ~/.cache/isp-search/optuna
    kill_after_a_complete_trial(space, "s31", complete, env, tmp_path / "first.log")
    meta = read_meta(exp_uri)
    local = Path(meta["optuna_storage"])
    assert local == tmp_path / "home" / ".cache" / "isp-search" / "optuna" / "s31.journal", local
    local.unlink()  # the driver's machine is gone: only the bucket's copy is left
    out = resume(space, "s31", env, tmp_path / "resume.log")
    assert "trial(s) final in the study are kept" in out and local.is_file(), out[-3000:]
    study = load_study(meta["study_name"], str(local))
    known = ray_statuses(exp_uri)
    assert sorted(known.values()) == ["TERMINATED"] * SAMPLES, known
    assert final_states(study) == {rid: "COMPLETE" for rid in known}
    assert len(study.trials) == SAMPLES
    with bucket.open_input_stream(f"{root}/optuna.journal") as f:
        assert f.read() == local.read_bytes()  # the bucket's copy is the final journal
    files = {i.path.removeprefix(f"{root}/") for i in bucket.get_file_info(pafs.FileSelector(root, recursive=True))
             if i.type == pafs.FileType.File}
    for rid in known:
        trial = f"trial_{rid}"
        assert {f"{trial}/result.json", f"{trial}/run/metrics.jsonl", f"{trial}/run/run.json"} <= files, sorted(files)
        assert any(re.fullmatch(rf"{trial}/checkpoint_\d+/last\.pt", f) for f in files), sorted(files)
    assert any(f.startswith("experiment_state-") for f in files), sorted(files)
    assert not (tmp_path / "exp").exists()  # nothing went to a local folder instead
    print(f"s3 study with a driver kill and --resume from the bucket: {time.time() - t0:.0f} s")
