"""Backbones (parametrized over the registry), checkpoints, paper-format state dicts through `isp-search predict`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from isp_search.cli import main
from isp_search.data.io import read_raw, read_rgb, write_raw
from isp_search.models import GENERATORS, create_generator, spec_for
from isp_search.models.checkpoint import load_generator, save_generator

EXPECTED_PARAMS = {"efficient_isp": 3060, "robust_isp": 1616, "rmfa_tiny": 29223}  # docs/method.md §3


def test_registry_holds_the_three_paper_backbones():
    assert set(GENERATORS.names()) >= set(EXPECTED_PARAMS)


@pytest.mark.parametrize("arch", GENERATORS.names())
def test_shapes_params_gradients(arch):
    torch.manual_seed(0)
    spec, model = spec_for(arch), create_generator(arch)
    assert sum(p.numel() for p in model.parameters()) == spec.params
    if arch in EXPECTED_PARAMS:
        assert spec.params == EXPECTED_PARAMS[arch]
    raw = torch.randint(0, 1024, (2, 32, 48)).float()
    x = spec.prepare_input(raw)
    assert x.shape == ((2, 4, 16, 24) if spec.input_layout == "packed" else (2, 3, 32, 48))
    assert spec.prepare_input(raw[0]).shape == x.shape[1:]  # unbatched (H, W) too
    y = model(x)
    assert y.shape == (2, 3, 32, 48) and torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_published_state_dict_keys():
    assert list(create_generator("efficient_isp").state_dict()) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]
    assert create_generator("robust_isp").state_dict()["conv2.weight"].shape == (4, 16, 3, 3)
    keys = create_generator("rmfa_tiny").state_dict()
    assert any(k.startswith("input_module.") for k in keys) and any(k.startswith("output_module.") for k in keys)


@pytest.fixture
def raw_png(tmp_path):
    raw = np.random.default_rng(0).integers(64, 1024, (48, 80)).astype(np.uint16)  # not square, not a power of 2
    p = tmp_path / "in.png"
    write_raw(p, raw)
    return p


def _save_like_the_paper(model: torch.nn.Module, path, monkeypatch) -> None:
    """A bare state_dict saved from CUDA tensors, as the published files are. Without a GPU the storages are
    recorded as ``cuda:0`` all the same (torch.load then needs map_location, exactly as with the real files)."""
    if torch.cuda.is_available():
        torch.save({k: v.cuda() for k, v in model.state_dict().items()}, path)
        return
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(model.state_dict(), path)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("arch", list(EXPECTED_PARAMS))
def test_paper_state_dict_through_predict(tmp_path, raw_png, arch, monkeypatch):
    torch.manual_seed(1)
    model = create_generator(arch).eval()
    sd = tmp_path / f"{arch}_paper.pth"
    _save_like_the_paper(model, sd, monkeypatch)
    out = tmp_path / "out.png"
    r = subprocess.run([sys.executable, "-m", "isp_search.cli", "predict", "--arch", arch, "--weights", str(sd),
                        "--raw", str(raw_png), "--out", str(out)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        ref = model(spec_for(arch).prepare_input(torch.from_numpy(read_raw(raw_png).astype("float32")))[None])[0]
    ref = np.rint(ref.clamp(0, 1).permute(1, 2, 0).numpy() * 255)
    got = read_rgb(out) * 255
    assert got.shape == (48, 80, 3)
    assert np.abs(got - ref).max() <= 1.0 + 1e-4  # 8-bit; a float ulp may flip one rounding
    assert np.mean(np.abs(got - ref) > 0.5) < 0.01


def _predict_inprocess(capsys, *args) -> tuple[int, str]:
    code = main(["predict", *map(str, args)])
    return code, capsys.readouterr().err


def test_our_checkpoints_and_run_folders_need_no_arch(tmp_path, raw_png, capsys):
    run = tmp_path / "run"
    ck = save_generator(run / "checkpoints" / "best.pt", create_generator("robust_isp"), "robust_isp", "pynet")
    loaded = load_generator(run)
    assert loaded.spec.name == "robust_isp" and loaded.preset == "pynet" and loaded.path == ck
    code, err = _predict_inprocess(capsys, "--weights", run, "--raw", raw_png, "--out", tmp_path / "o.png")
    assert code == 0 and (tmp_path / "o.png").is_file(), err
    # a bare state_dict whose keys and shapes fit exactly one backbone needs no --arch either
    assert load_generator(_bare(tmp_path, "efficient_isp")).spec.name == "efficient_isp"


def _bare(tmp_path, arch):
    p = tmp_path / f"{arch}.pth"
    torch.save(create_generator(arch).state_dict(), p)
    return p


def test_mismatched_files_are_refused_in_one_line(tmp_path, raw_png, capsys):
    ck = save_generator(tmp_path / "ck.pt", create_generator("robust_isp"), "robust_isp", "paper")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 10)
    (tmp_path / "trunc.pth").write_bytes(ck.read_bytes()[:200])
    eff = _bare(tmp_path, "efficient_isp")
    cases = {
        "wrong arch for our checkpoint": (["--arch", "efficient_isp", "--weights", ck], "robust_isp"),
        "random bytes": (["--weights", tmp_path / "junk.pth"], "junk.pth"),
        "truncated": (["--weights", tmp_path / "trunc.pth"], "trunc.pth"),
        "paper file, wrong arch": (["--arch", "rmfa_tiny", "--weights", eff], "does not fit 'rmfa_tiny'"),
        "paper file, same keys other shapes": (["--arch", "robust_isp", "--weights", eff], "has shape"),
        "missing file": (["--weights", tmp_path / "none.pth"], "none.pth"),
        "unknown arch": (["--arch", "efficient", "--weights", eff], "did you mean"),
        "unknown preset": (["--preset", "papr", "--weights", eff], "did you mean 'paper'"),
    }
    for name, (args, needle) in cases.items():
        code, err = _predict_inprocess(capsys, *args, "--raw", raw_png, "--out", tmp_path / "x.png")
        assert code == 2, (name, err)
        assert err.startswith("isp-search: error: ") and err.count("\n") == 1 and needle in err, (name, err)
    assert not (tmp_path / "x.png").exists()


def test_bad_raw_inputs_are_refused(tmp_path, capsys):
    eff = _bare(tmp_path, "efficient_isp")
    odd = tmp_path / "odd.png"
    write_raw(odd, np.zeros((31, 40), np.uint16))
    code, err = _predict_inprocess(capsys, "--weights", eff, "--raw", odd, "--out", tmp_path / "o.png")
    assert code == 2 and "even" in err and err.count("\n") == 1
    code, err = _predict_inprocess(capsys, "--weights", eff, "--raw", tmp_path / "no.png", "--out", tmp_path / "o.png")
    assert code == 2 and "no.png" in err
