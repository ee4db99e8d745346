"""``isp-search check-method``: the unpaired method learns a known colour shift (a learnability check)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from isp_search.cli import main

torch.set_num_threads(1)


def test_target_look_is_a_warm_brighter_cast():
    from isp_search.train.learnability import target_look

    gray = np.full((2, 2, 3), 0.4)
    out = target_look(gray)[0, 0]
    assert out[0] > out[1] > out[2] and out[1] > 0.4  # more red, less blue, brighter


@pytest.mark.slow
def test_check_method_moves_colour_toward_target_and_keeps_structure(tmp_path, capsys):
    """The small check: after the unpaired stage the outputs' mean LAB is much closer to the target domain's than
    the pretrained start's, and the luminance structure of the reference is kept. A broken GAN (real/fake swapped,
    no D step, the adversarial gradient reversed or not adapted by DLA) does not move it there."""
    code = main(["check-method", "--small", "--json", "--work-dir", str(tmp_path / "check")])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, res["status"]
    before, after = res["before"], res["after"]
    assert before["distance"] > 5.0  # the problem is not already solved by pretraining
    assert after["distance"] < 0.6 * before["distance"], (before, after)  # measured: 25.1 -> 4.8
    assert after["ssim_L"] > 0.5 and after["ssim_L"] > before["ssim_L"] - 0.1, (before, after)  # 0.62 -> 0.60
