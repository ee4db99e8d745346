"""The real-feature cache of a study: filled by the prepare stage before any trial (Ray tasks on a real local
cluster), found again by a later study ("already there"), sized by preflight against the folder's free space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clirun import run_cli
from raycluster import ENV, running_head

from isp_search.search.context import base_train_config
from isp_search.search.preflight import PreflightError, check, problems
from isp_search.search.prepare_real import FREE_BYTES_ENV, estimate, plan
from isp_search.search.space_file import load_space

ROOT = Path(__file__).resolve().parents[1]
SMOKE_CFG = ROOT / "configs" / "smoke_unpaired.yaml"


def write_space(tmp: Path, data: Path) -> Path:
    """Whole 64x64 images (no patches): cache_real auto resolves on. ``features.input`` changes the ViT's and
    AlexNet's inputs, so each choice has a cache of its own; the learning rate changes none."""
    p = tmp / "space.yaml"
    p.write_text(f"""\
name: rc
base:
  config: {SMOKE_CFG}
  overrides: {{data.root: {data}, data.synthetic: false, data.patch_size: null, train.steps: 2,
              train.eval_interval: 2}}
space:
  optim.g_lr: {{type: float, low: 1e-4, high: 1e-3, log: true}}
  features.input: {{type: categorical, choices: [reference, normalized]}}
search: {{sampler: tpe, seed: 0, num_samples: 1, max_concurrent: 1}}
scheduler: {{type: none}}
confirm: {{seeds: 0}}
resources: {{cpu: 1}}
storage: {{path: {tmp / 'exp'}}}
""")
    return p


def test_plan_has_one_cache_per_key_changing_choice(synth_root, tmp_path):
    space = load_space(write_space(tmp_path, synth_root))
    configs = plan(space, base_train_config(space))
    assert sorted(c.features.input for c in configs) == ["normalized", "reference"]  # g_lr: no cache of its own


@pytest.mark.slow  # two cache fills and three preflights: ~40 s on 2 shared cores
def test_preflight_refuses_in_one_line_when_the_cache_folder_is_too_small(synth_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ISP_SEARCH_REAL_CACHE", str(tmp_path / "real"))
    space = load_space(write_space(tmp_path, synth_root))
    cfg = base_train_config(space)
    need, n = estimate(space, cfg)
    assert n == 2 and need > 0
    monkeypatch.setenv(FREE_BYTES_ENV, str(need - 1))
    found = [line for line in problems(space, cfg) if "real-feature" in line]
    assert len(found) == 1 and "\n" not in found[0], found
    assert "features.cache_real: false" in found[0] and str(tmp_path / "real") in found[0]
    with pytest.raises(PreflightError):
        check(space, cfg)
    monkeypatch.setenv(FREE_BYTES_ENV, str(need))
    assert not [line for line in problems(space, cfg) if "real-feature" in line]

    # `isp-search prepare SPACE` alone fills them where the trials look ($ISP_SEARCH_REAL_CACHE), and their size
    # is the estimate, byte for byte
    monkeypatch.setenv("ISP_SEARCH_CACHE", str(tmp_path / "refs"))
    code, out, _ = run_cli(capsys, "prepare", str(tmp_path / "space.yaml"), "--workers", "1", "--json")
    rows = json.loads(out)["real_caches"]
    assert code == 0 and sum(r["bytes"] for r in rows) == need and all(r["built"] for r in rows), rows
    assert {Path(r["folder"]).parent for r in rows} == {tmp_path / "real"}
    assert estimate(space, cfg) == (0, 2)  # built: found by their key.json, nothing more needed
    code, out, _ = run_cli(capsys, "prepare", str(tmp_path / "space.yaml"), "--workers", "1")
    assert code == 0 and len([ln for ln in out.splitlines() if ln.startswith("prepare: real-feature cache ")
                              and ln.endswith("already there")]) == 2, out
    monkeypatch.setenv(FREE_BYTES_ENV, "0")
    assert not [line for line in problems(space, cfg) if "real-feature" in line]


_DRIVER = """
import json, os, sys
import ray
from isp_search.search.context import open_study
from isp_search.search.preflight import preflight
from isp_search.search.prepare import prepare_stage
from isp_search.search.space_file import load_space

space_path, address, name = sys.argv[1:4]
ray.init(address=address, runtime_env={"env_vars": {k: os.environ[k] for k in
                                                    ("ISP_SEARCH_CACHE", "ISP_SEARCH_REAL_CACHE")}})
ctx = open_study(load_space(space_path), name)
preflight(ctx)
prepare_stage(ctx)
print("EXP", ctx.exp.uri, flush=True)
"""


@pytest.fixture(scope="module")
def head():
    yield from running_head()


def _prepare(head, space: Path, name: str, real: Path, tmp: Path) -> tuple[str, Path]:
    env = {**ENV, "ISP_SEARCH_REAL_CACHE": str(real)}
    r = subprocess.run([sys.executable, "-c", _DRIVER, str(space), head.address, name], check=False,
                       capture_output=True, text=True, env=env, timeout=600, cwd=tmp)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    exp = next(line.split(" ", 1)[1] for line in r.stdout.splitlines() if line.startswith("EXP "))
    return out, Path(exp)


@pytest.mark.ray
@pytest.mark.slow
def test_prepare_stage_fills_the_real_feature_caches_once_then_finds_them(head, synth_root, tmp_path):
    """Study 1's prepare stage fills both caches (one per features.input choice) as Ray tasks: every row of every
    branch filled before a trial could start, recorded with times. Study 2 on the same data finds them."""
    real = tmp_path / "real"
    space = write_space(tmp_path, synth_root)
    out, exp = _prepare(head, space, "one", real, tmp_path)
    built = [line for line in out.splitlines() if line.startswith("prepare: real-feature cache ")]
    assert len(built) == 2 and all("16 images" in line and "built in" in line for line in built), out[-3000:]
    record = json.loads((exp / "prepare.json").read_text())["real_caches"]
    assert sorted(Path(r["folder"]).name for r in record) == sorted(p.name for p in real.iterdir())
    for r in record:
        assert r["built"] and r["started"] <= r["finished"] and r["images"] == 16
        assert sorted(r["branches"]) == ["alex_gray", "content", "vit"]
        for b in r["branches"]:  # 8 RAW samples (content, by sample), 8 photos (vit, alex_gray)
            filled = np.fromfile(Path(r["folder"]) / f"{b}.filled", dtype=np.uint8)
            assert len(filled) == 8 and filled.all(), (r["folder"], b)
        manifest = json.loads((Path(r["folder"]) / "vit.json").read_text())
        assert manifest["completed"] is True

    out2, exp2 = _prepare(head, space, "two", real, tmp_path)
    again = [line for line in out2.splitlines() if line.startswith("prepare: real-feature cache ")]
    assert len(again) == 2 and all(line.endswith("already there") for line in again), out2[-3000:]
    assert sorted(line.split()[3] for line in again) == sorted(line.split()[3] for line in built)
    assert not any(r["built"] for r in json.loads((exp2 / "prepare.json").read_text())["real_caches"])

