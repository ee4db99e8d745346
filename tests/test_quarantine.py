"""A node that fails trials at once with the same deterministic error gets no new trials, on a real 3-raylet cluster;
the last node that can run a trial is never quarantined (the callback alone, on made-up nodes and results).

The head holds no ``trial_slot``, so trials run only on the two joined nodes: one at a time on node A, two at once
on node B, so that the first three trials take every slot and B gets two of them whatever the timing. Node B is started
with ``ISP_SEARCH_FAIL_TRIALS`` (:mod:`isp_search.search.faults`): every trial there raises FileNotFoundError on a
path naming the trial, before its first evaluation, as on a node whose storage mount is missing. The node check
passes it (it cannot see this). After B's second such failure the search quarantines it: one line names it, and
every later trial runs on node A and completes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from ray import tune
from raycluster import BIN, ENV, running_head

from isp_search.search import quarantine
from isp_search.search.optuna_storage import load_study
from isp_search.search.placement import node_selector
from isp_search.search.quarantine import NodeQuarantine, trial_resources
from isp_search.search.reconcile import RAY_TRIAL_ATTR

SMOKE_CFG = Path(__file__).resolve().parents[1] / "configs" / "smoke_unpaired.yaml"
MISSING = "/mnt/isp-search/exp/q1/trial_{trial}/run: no such directory"
# The first three trials fill A's one slot and B's two, so B gets two whatever the timing. With one slot on B, B's
# second trial waited for a new worker there, and A's reused worker took it (worker_reuse.py): 1 of 8 trials on B.
TRIALS = 5
STEPS = 4


@pytest.fixture(scope="module")
def head():
    body = running_head()
    h = next(body)
    h.add_node({"trial_slot": 1})  # node A
    h.add_node({"trial_slot": 2}, env={"ISP_SEARCH_FAIL_TRIALS": MISSING}, cpus=2)  # node B
    yield h
    body.close()


def write_space(tmp: Path) -> Path:
    p = tmp / "space.yaml"
    p.write_text(f"""\
name: quarantine
base:
  config: {SMOKE_CFG}
  overrides: {{train.steps: {STEPS}, train.eval_interval: {STEPS // 2}}}
space:
  optim.d_color_lr: {{type: float, low: 1.0e-6, high: 1.0e-4, log: true}}
search: {{sampler: random, seed: 0, num_samples: {TRIALS}, max_concurrent: 3, max_failures: 0}}
scheduler: {{type: none}}
confirm: {{seeds: 0}}
resources: {{cpu: 1, custom: {{trial_slot: 1}}}}
storage: {{path: {tmp / 'exp'}}}
export: {{top_k: 0, results: {tmp / 'results'}}}
""")
    return p


def error_reports(exp: Path) -> dict[str, dict]:
    """Ray trial id -> its error report (guard.py), for the trials that reported one."""
    out = {}
    for f in exp.glob("trial_*/result.json"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r.get("trial_status") == "error":
                out[r["trial_id"]] = r
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_a_node_failing_trials_at_once_is_quarantined_after_two(head, tmp_path):
    space = write_space(tmp_path)
    r = subprocess.run([str(BIN / "isp-search"), "search", str(space), "--name", "q1"],
                       env={**ENV, "RAY_ADDRESS": head.address}, cwd=tmp_path, capture_output=True, text=True,
                       timeout=420, start_new_session=True, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]

    errors = error_reports(tmp_path / "exp" / "q1")
    # node B gets its two; a trial created between its two failures may still go there (placed trials keep their node)
    assert 2 <= len(errors) <= 3, (sorted(errors), out[-4000:])
    nodes = {e["error_node"] for e in errors.values()}
    assert len(nodes) == 1, nodes
    node_b = nodes.pop()
    for trial_id, e in errors.items():
        assert e["fail_reason"] == "FileNotFoundError: " + MISSING.replace("{trial}", trial_id), e
        assert e["iterations_since_restore"] == 1, e  # before its first evaluation

    said = [ln for ln in out.splitlines() if "quarantined" in ln]
    assert len(said) == 1, said
    assert re.search(rf"nodes: quarantined node [\d.]+ \({node_b[:8]}\): 2 trials failed there before their first "
                     r"evaluation with FileNotFoundError: /mnt/isp-search/exp/q1/trial_\w+/run: no such directory; "
                     r"no new trials go there$", said[0]), said[0]

    meta = json.loads((tmp_path / "exp" / "q1" / "isp_search.json").read_text())
    trials = load_study(meta["study_name"], meta["optuna_storage"]).trials
    assert len(trials) == TRIALS and len({t.user_attrs[RAY_TRIAL_ATTR] for t in trials}) == TRIALS
    failed = sorted((t for t in trials if t.state.name == "FAIL"), key=lambda t: t.datetime_complete)
    assert {t.user_attrs[RAY_TRIAL_ATTR] for t in failed} == set(errors), out[-4000:]
    quarantined_at = failed[1].datetime_complete  # the second failure: from then on trials are kept off B
    late = [t.number for t in failed[2:] if t.datetime_start >= quarantined_at]
    assert not late, (late, out[-4000:])  # a trial created after the quarantine went to B
    # every other trial ran on node A (node B fails every trial it starts) and completed
    assert sorted(t.state.name for t in trials if t.state.name != "FAIL") == ["COMPLETE"] * (TRIALS - len(failed))


def test_the_last_node_that_can_run_a_trial_is_never_quarantined(monkeypatch, capsys):
    a, b = "a" * 56, "b" * 56
    monkeypatch.setattr(quarantine, "trial_nodes", lambda space: [{"NodeID": a, "NodeManagerAddress": "10.0.0.1"},
                                                                  {"NodeID": b, "NodeManagerAddress": "10.0.0.2"}])
    resources = trial_resources({"CPU": 1.0}, "last-node-study", checked_out=[a])  # the node check left A out
    watch = NodeQuarantine(space=None, study="last-node-study")

    def fail(trial_id: str, iterations: int = 1) -> None:
        trial = type("Trial", (), {"trial_id": trial_id})()
        watch.on_trial_result(0, [], trial, {"trial_status": "error", "error_deterministic": 1, "error_node": b,
                                             "fail_reason": f"FileNotFoundError: /x/trial_{trial_id}/run",
                                             "iterations_since_restore": iterations})

    only_a = tune.PlacementGroupFactory([{"CPU": 1.0}], bundle_label_selector=[node_selector([a])])
    assert resources({}) == only_a
    fail("00000001", iterations=3)  # failed after evaluating: not the node's fault as far as anyone can tell
    fail("00000002")
    assert capsys.readouterr().out == ""
    fail("00000003")  # the second at once: B would be quarantined, but it is the last node left
    fail("00000004")
    out = capsys.readouterr().out.splitlines()
    assert out == [(f"nodes: node 10.0.0.2 ({b[:8]}): 2 trials failed there before their first evaluation with "
                    "FileNotFoundError: /x/trial_00000003/run, but it is the last node that can run a trial: it "
                    "stays in use, and the trials sent there go on failing")], out
    assert resources({}) == only_a  # new trials may still go to B


def test_trials_created_after_the_quarantine_are_kept_off_the_node(monkeypatch, capsys):
    """On the cluster above, A's reused worker takes every trial left (worker_reuse.py), so where trials run does not
    show the exclusion; the placement of each new trial does."""
    a, b, c = "a" * 56, "b" * 56, "c" * 56
    monkeypatch.setattr(quarantine, "trial_nodes", lambda space: [{"NodeID": n, "NodeManagerAddress": f"10.0.0.{i}"}
                                                                  for i, n in enumerate((a, b, c), 1)])
    resources = trial_resources({"CPU": 1.0}, "kept-off-study", checked_out=[c])
    watch = NodeQuarantine(space=None, study="kept-off-study")
    for trial_id in ("00000001", "00000002"):
        watch.on_trial_result(0, [], type("Trial", (), {"trial_id": trial_id})(),
                              {"trial_status": "error", "error_deterministic": 1, "error_node": b,
                               "fail_reason": f"FileNotFoundError: /x/trial_{trial_id}/run",
                               "iterations_since_restore": 1})
    assert capsys.readouterr().out.startswith(f"nodes: quarantined node 10.0.0.2 ({b[:8]}): 2 trials failed")
    assert resources({}) == tune.PlacementGroupFactory([{"CPU": 1.0}], bundle_label_selector=[node_selector([b, c])])
