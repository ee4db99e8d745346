"""Backbones (parametrized over the registry), checkpoints and paper-format state dicts through `predict`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from isp_search.data.io import read_raw, read_rgb, write_raw
from isp_search.models import GENERATORS, create_generator, spec_for
from isp_search.models.checkpoint import load_generator, save_generator

EXPECTED_PARAMS = {"efficient_isp": 3060, "robust_isp": 1616, "rmfa_tiny": 29223}


@pytest.mark.parametrize("arch", GENERATORS.names())
def test_shapes_params_gradients(arch):
    torch.manual_seed(0)
    spec, model = spec_for(arch), create_generator(arch)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[arch] == spec.params
    raw = torch.randint(0, 1024, (2, 64, 96)).float()
    x = spec.prepare_input(raw)
    assert x.shape == ((2, 4, 32, 48) if spec.input_layout == "packed" else (2, 3, 64, 96))
    y = model(x)
    assert y.shape == (2, 3, 64, 96) and torch.isfinite(y).all()
    y.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_published_state_dict_keys():
    assert list(create_generator("efficient_isp").state_dict()) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]
    assert create_generator("robust_isp").state_dict()["conv2.weight"].shape == (4, 16, 3, 3)


@pytest.fixture
def raw_png(tmp_path):
    raw = np.random.default_rng(0).integers(64, 1024, (48, 80)).astype(np.uint16)
    p = tmp_path / "in.png"
    write_raw(p, raw)
    return p


def _predict(*args):
    return subprocess.run([sys.executable, "-m", "isp_search.cli", "predict", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("arch", GENERATORS.names())
def test_paper_state_dict_through_predict(tmp_path, raw_png, arch):
    torch.manual_seed(1)
    model = create_generator(arch).eval()
    sd = tmp_path / f"{arch}_paper.pth"
    torch.save(model.state_dict(), sd)  # the published files are bare state_dicts
    out = tmp_path / "out.png"
    r = _predict("--arch", arch, "--weights", sd, "--raw", raw_png, "--out", out)
    assert r.returncode == 0, r.stderr
    spec = spec_for(arch)
    with torch.no_grad():
        ref = model(spec.prepare_input(torch.from_numpy(read_raw(raw_png).astype("float32")))[None])[0]
    ref = ref.clamp(0, 1).permute(1, 2, 0).numpy()
    got = read_rgb(out)
    assert got.shape == (48, 80, 3)
    assert np.abs(got - np.round(ref * 255) / 255).max() <= 1 / 255 + 1e-6


def test_our_checkpoint_needs_no_arch_and_mismatches_are_refused(tmp_path, raw_png):
    ck = save_generator(tmp_path / "ck.pt", create_generator("robust_isp"), "robust_isp", "paper")
    assert load_generator(ck).spec.name == "robust_isp"
    assert _predict("--weights", ck, "--raw", raw_png, "--out", tmp_path / "o.png").returncode == 0
    cases = {
        "wrong arch": ["--arch", "efficient_isp", "--weights", ck],
        "random bytes": ["--weights", tmp_path / "junk.pth"],
        "truncated": ["--weights", tmp_path / "trunc.pth"],
        "mismatched keys": ["--arch", "rmfa_tiny", "--weights", tmp_path / "eff.pth"],
    }
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 10)
    (tmp_path / "trunc.pth").write_bytes(ck.read_bytes()[:200])
    torch.save(create_generator("efficient_isp").state_dict(), tmp_path / "eff.pth")
    for name, args in cases.items():
        r = _predict(*args, "--raw", raw_png, "--out", tmp_path / "x.png")
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (name, r.stderr)
    assert not (tmp_path / "x.png").exists()


def test_odd_sized_raw_is_refused(tmp_path):
    p = tmp_path / "odd.png"
    write_raw(p, np.zeros((31, 40), np.uint16))
    ck = save_generator(tmp_path / "ck.pt", create_generator("efficient_isp"), "efficient_isp", "paper")
    r = _predict("--weights", ck, "--raw", p, "--out", tmp_path / "o.png")
    assert r.returncode == 2 and "even" in r.stderr
