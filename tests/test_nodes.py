"""Every node that can take a trial is checked on itself before it takes one, on a real 3-raylet local cluster.

The head holds no ``trial_slot``, so trials can only run on the two joined nodes. Node B is started with its own
``ISP_SEARCH_CACHE`` pointing at an empty folder: the way a node whose cache mount is missing (or whose
environment points elsewhere) looks from inside. The prepare stage builds the reference stores into the driver's
cache, which node B does not see. Without ``--skip-bad-nodes`` the study refuses naming node B; with it, every
trial runs on node A and COMPLETES (node B's cache folder stays empty: no trial ever read or built a store there).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from raycluster import BIN, ENV, running_head

from isp_search.search.optuna_storage import load_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMOKE_CFG = Path(__file__).resolve().parents[1] / "configs" / "smoke_unpaired.yaml"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    empty = tmp_path_factory.mktemp("node-b-cache")
    body = running_head()
    head = next(body)
    head.add_node({"trial_slot": 1})  # node A: sees what the driver sees
    head.add_node({"trial_slot": 1}, env={"ISP_SEARCH_CACHE": str(empty)})  # node B
    yield head, empty
    body.close()


def write_space(tmp: Path) -> Path:
    p = tmp / "space.yaml"
    p.write_text(f"""\
name: nodes
base:
  config: {SMOKE_CFG}
  overrides: {{train.steps: 2, train.eval_interval: 1}}
space:
  optim.d_color_lr: {{type: float, low: 1.0e-6, high: 1.0e-4, log: true}}
search: {{sampler: tpe, seed: 0, num_samples: 2, max_concurrent: 2, max_failures: 0}}
scheduler: {{type: none}}
confirm: {{seeds: 0}}
resources: {{cpu: 1, custom: {{trial_slot: 1}}}}
storage: {{path: {tmp / 'exp'}}}
export: {{top_k: 0, results: {tmp / 'results'}}}
""")
    return p


def search(head, space: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "isp-search"), "search", str(space), "--name", "n1", *args],
                          env={**ENV, "RAY_ADDRESS": head.address}, cwd=space.parent, capture_output=True, text=True,
                          timeout=420, start_new_session=True)


def test_a_node_that_cannot_see_the_caches_is_named_then_skipped(nodes, tmp_path):
    head, empty = nodes
    space = write_space(tmp_path)
    r = search(head, space)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-4000:]
    refusal = [ln for ln in out.splitlines() if ln.startswith("isp-search: error: nodes:")]
    assert refusal == ["isp-search: error: nodes: 1 of 2 node(s) that can run a trial cannot (fix them, or add "
                       "--skip-bad-nodes to run on the others):"], out[-4000:]
    named = [ln.strip() for ln in out.splitlines() if ln.startswith("  node ")]
    assert len(named) == 1 and re.match(r"node [\d.]+ \([0-9a-f]{8}\): ", named[0]), out[-4000:]
    named = named[0]
    assert f"reference stores are not in {empty} ($ISP_SEARCH_CACHE on this node)" in named, named
    assert not list((tmp_path / "exp" / "n1").glob("trial_*"))  # no trial was started

    r = search(head, space, "--resume", "--skip-bad-nodes")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert f"nodes: skipped (--skip-bad-nodes): {named}" in out
    meta = json.loads((tmp_path / "exp" / "n1" / "isp_search.json").read_text())
    states = [t.state.name for t in load_study(meta["study_name"], meta["optuna_storage"]).trials]
    assert states == ["COMPLETE", "COMPLETE"], out[-4000:]
    assert not any(empty.iterdir()), list(empty.iterdir())  # node B never ran a trial
