"""Metrics against hand computations and reference implementations; weights resolver; CLI help everywhere."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from isp_search.cli import build_parser
from isp_search.errors import UserError
from isp_search.metrics import METRICS, compute, direction, ms_ssim_scales
from isp_search import weights


def test_psnr_hand_computed():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full_like(x, 0.1)  # mse = 0.01 -> 20 dB
    assert compute(x, y, ["psnr"], "random")["psnr"] == pytest.approx(20.0, abs=1e-4)


def test_ssim_matches_tf_settings_reference():
    rng = np.random.default_rng(0)
    a = rng.random((48, 48, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0, win_size=11)
    t = lambda v: torch.from_numpy(v).permute(2, 0, 1)[None]
    got = compute(t(a), t(b), ["ssim"], "random")["ssim"]
    assert got == pytest.approx(ref, abs=2e-3)
    assert compute(t(a), t(a), ["ssim"], "random")["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_identity_monotone_and_scales():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 192, 192)
    vals = [compute(x, (x + s * torch.randn_like(x)).clamp(0, 1), ["ms_ssim"], "random")["ms_ssim"]
            for s in (0.0, 0.05, 0.2)]
    assert vals[0] == pytest.approx(1.0, abs=1e-5) and vals[0] > vals[1] > vals[2]
    assert ms_ssim_scales(192, 192) == 5 and ms_ssim_scales(64, 64) == 3


@pytest.mark.parametrize("name", ["lpips", "dists"])
def test_learned_metrics_random_weights_are_labelled(name):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    same = compute(x, x, [name], "random")
    other = compute(x, torch.rand_like(x), [name], "random")
    assert same[name] == pytest.approx(0.0, abs=1e-6) and other[name] > same[name]
    assert same["lpips_weights"] == "random"


def test_every_metric_declares_a_direction():
    for n in METRICS.names():
        assert direction(n) in ("min", "max")
    assert direction("lpips") == "min" and direction("psnr") == "max" and direction("val/ssim") == "max"


def test_missing_weights_name_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("ISP_SEARCH_WEIGHTS", raising=False)
    with pytest.raises(UserError, match=r"vgg19-dcbb9e9d.pth.*isp-search weights fetch"):
        weights.require("vgg19")
    assert weights.find("lpips_alex_v0.1") is not None  # shipped in the lpips wheel
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({}, tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    assert weights.require("vgg19") == tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "weights", "status", "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "dists_alpha_beta" in r.stdout


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command):
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", command, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: isp-search" in r.stdout
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    for action in sub._actions:  # every option is described
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"
