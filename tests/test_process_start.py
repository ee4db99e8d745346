"""What a fresh process loads: a trial worker, a node check and the driver import no library they do not use.

Every trial, node check, confirmation task and driver is a new Python process; each second of imports there is paid
once per process, dozens of times a study. Measured on a 2-core machine (2026-12-07): W&B loaded by timm's utils
4.3 s, TensorFlow loaded by TensorBoard's writer 7 s, onnx 1-2 s and colour 1-2 s. Run in a fresh interpreter,
because this test process has loaded most of them already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNUSED = ("wandb", "tensorflow", "onnx", "colour", "colour_demosaicing")

PROBE = """
import json, sys
from isp_search.search import nodes, study, trainable  # the modules a node check, the driver and a trial load
imported = [m for m in {unused!r} if m in sys.modules]
from isp_search.train import apply_overrides, load_train_config, train
cfg = apply_overrides(load_train_config({config!r}), {over!r})
summary = train(cfg, {run!r})
print(json.dumps({{"imported": imported, "status": summary["status"],
                   "after_training": [m for m in ("wandb", "tensorflow") if m in sys.modules]}}))
"""


@pytest.mark.slow
def test_a_trial_loads_neither_wandb_nor_tensorflow_nor_export_libraries(synth_root, tmp_path):
    """Importing the node check, the driver and the trainable loads none of W&B, TensorFlow, onnx, colour; a
    training run (TensorBoard events written) then has still loaded neither W&B nor TensorFlow, and its events
    are readable."""
    over = {"mode": "unpaired", "data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 2,
            "data.pairing": "shuffled", "train.progress": False, "train.steps": 2, "train.eval_interval": 2,
            "train.log_interval": 1}
    code = PROBE.format(unused=UNUSED, config=str(ROOT / "configs" / "smoke_unpaired.yaml"), over=over,
                        run=str(tmp_path / "run"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed"
    assert out["imported"] == [], out
    assert out["after_training"] == [], out
    # deferred: tensorboard imports TensorFlow when it is installed (seconds), for this test only
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/psnr")] == [2]
