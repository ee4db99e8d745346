"""``isp-search bench-driver``: the real driver on stand-in trials reaches a final Optuna state for every trial and
measures the time a GPU waits between two trials; the stand-in's module stays light for the trial workers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from clirun import run_cli

from isp_search.commands.bench_driver import format_report


def test_the_stand_in_module_imports_no_torch():
    """Every trial worker imports it: 64 workers with torch would not fit in 24 GiB."""
    code = "import sys, isp_search.diagnostics.driver_stand_in\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False", r.stdout + r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.ray
def test_every_trial_ends_final_in_the_journal_and_the_gaps_are_measured(capsys):
    trials, gpus = 4, 2
    code, out, err = run_cli(capsys, "bench-driver", "--trials", trials, "--concurrent", gpus, "--trial-seconds", 1,
                             "--json")
    assert code == 0, err[-3000:]
    r = json.loads(out)
    assert r["errors"] == []
    # a trial worker unpickles the trainable, its arguments and its resources function: none may import torch
    assert r["workers_with_torch"] == 0, r["memory"]
    states = r["optuna_states"]
    assert sum(states.values()) == trials and set(states) <= {"COMPLETE", "PRUNED"}, states
    # the default point always runs to its end (MOASHA keeps it): its closing report makes it COMPLETE
    assert states.get("COMPLETE", 0) >= 1, states
    # every GPU's first trial starts the run; each later trial follows one that ended on its GPU, in its worker
    assert r["gaps"] == trials - gpus
    assert r["same_worker"] == r["gaps"] and r["new_processes"] == 0, r
    assert 0 <= r["gap_median_s"] <= r["gap_p95_s"] <= r["gap_max_s"] < 120, r
    assert all(math.isfinite(r[k]) for k in ("gap_mean_s", "trial_mean_s", "busy_run"))
    assert set(r["sampler_s"]) == {"0", str(trials)} and r["suggest_s"] and r["tell_s"]
    assert r["sizes"]["optuna_journal"] > 0 and r["sizes"]["ray_state"] > 0 and r["cpu_s"]["driver"] > 0
    text = "\n".join(format_report(r))
    for field in ("gap, a trial's end to the next start on its GPU", "median", "p95", "with 2 h trials",
                  "with 10 min trials", "sampler, per suggestion", "CPU: driver", "optuna journal",
                  "Ray experiment state"):
        assert field in text, text
    assert max(len(line) for line in text.splitlines()) <= 120, text
