"""``isp-search check-method``: the unpaired method learns a known colour shift (a learnability check), and the
trained models' mechanism is the one docs/method.md §4–§5 describe (discriminator margins, discriminator updates,
DLA shares)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from isp_search.cli import main

torch.set_num_threads(1)


def test_target_look_is_a_warm_brighter_cast():
    from isp_search.diagnostics.learnability import target_look

    gray = np.full((2, 2, 3), 0.4)
    out = target_look(gray)[0, 0]
    assert out[0] > out[1] > out[2] and out[1] > 0.4  # more red, less blue, brighter


def _result(**over) -> dict:
    """A passing result in the shape :func:`check_method` returns (numbers as measured by the small check)."""
    res = {"status": {"pretrain": "completed", "unpaired": "completed"}, "dla": True, "answer_ssim_L": 0.47,
           "before": {"distance": 25.0, "ssim_L": 0.62, "psnr_to_answer": 12.6},
           "late": {"distance": 4.8, "ssim_L": 0.60, "psnr_to_answer": 14.7},
           "mechanism": {"discriminators": {"adv_color": {"margin": 7e-3}, "adv_relu1": {"margin": 1e-4},
                                            "adv_relu4": {"margin": -1e-7}},
                         "d_update_error": {"adv_color": 0.0, "adv_relu1": 0.0, "adv_relu4": 0.0},
                         "dla_share": {t: {"share": 1.0, "expected": 1.0} for t in
                                       ("content", "tv", "adv_color", "adv_relu1", "adv_relu4")}}}
    for key, value in over.items():  # "a.b.c": value
        *path, last = key.split(".")
        node = res
        for p in path:
            node = node[p]
        node[last] = value
    return res


@pytest.mark.parametrize("broken, criterion", [
    ({"late.distance": 16.0}, "moved"),
    ({"late.psnr_to_answer": 12.0}, "answer"),
    ({"late.ssim_L": 0.3}, "structure"),
    ({"mechanism.discriminators.adv_color.margin": -3e-3}, "margin"),
    ({"mechanism.d_update_error.adv_relu4": 1.0}, "d_update"),
    ({"mechanism.dla_share.adv_color": {"share": -1.0, "expected": 1.0}}, "dla"),
    ({"status.unpaired": "diverged"}, "trained"),
])
def test_verdict_fails_exactly_the_broken_criterion(broken, criterion):
    from isp_search.diagnostics.learnability import verdict

    assert all(v["ok"] for v in verdict(_result()).values())
    failed = [k for k, v in verdict(_result(**broken)).items() if not v["ok"]]
    assert failed == [criterion]


@pytest.mark.slow
def test_check_method_moves_colour_toward_target_keeps_structure_and_mechanism(tmp_path, capsys):
    """The small check: late in the unpaired stage (the median of its second half's measurements) the outputs' mean
    LAB is much closer to the target domain's than the pretrained start's, their PSNR to the known answer rises,
    the luminance structure is kept, and the trained
    models' mechanism is docs/method.md §4–§5's. Every one of these mutations turns this test red (each applied in
    a scratch copy): real/fake swapped in the G loss, in the D loss, in both; the D optimiser step removed; DLA's
    weights not applied; the adversarial gradient sign flipped; R1/R2 on the images instead of the feature tensors."""
    code = main(["check-method", "--small", "--json", "--work-dir", str(tmp_path / "check")])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    failed = {k: v["detail"] for k, v in res["verdict"].items() if not v["ok"]}
    assert code == 0 and res["passed"] and not failed, failed
    before, late = res["before"], res["late"]
    assert len(late["steps"]) >= 5 and min(late["steps"]) > res["size"]["unpaired_steps"] / 2, late
    assert before["distance"] > 5.0  # the problem is not already solved by pretraining
    assert late["distance"] < 0.6 * before["distance"], (before, late)  # measured: 25.05 -> 7.21 (final 4.84)
    assert late["psnr_to_answer"] > before["psnr_to_answer"], (before, late)  # 12.59 -> 14.99 dB
    bar = min(before["ssim_L"], res["answer_ssim_L"]) - 0.1  # 0.600 vs min(0.624, 0.472) - 0.1
    assert late["ssim_L"] >= bar, (before, late, res["answer_ssim_L"])
    mech = res["mechanism"]
    assert mech["discriminators"]["adv_color"]["margin"] > 0, mech["discriminators"]  # +7.3e-3
    assert all(e < 1e-3 for e in mech["d_update_error"].values()), mech["d_update_error"]  # 0.0 each
    shares = mech["dla_share"]
    assert set(shares) == {"content", "tv", "adv_color", "adv_relu1", "adv_relu4"}
    assert all(abs(v["share"] - v["expected"]) < 1e-3 and v["share"] > 0.9 for v in shares.values()), shares
