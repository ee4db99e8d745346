"""Metrics against hand computations, scikit-image and TensorFlow itself; learned metrics with random weights
(labelled); directions; the pretrained-weights resolver; `isp-search eval`; help of every command."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from isp_search import weights
from isp_search.cli import build_parser, main
from isp_search.errors import UserError
from isp_search.metrics import METRICS, Evaluator, build_dists, build_lpips, compute, direction, evaluate_model
from isp_search.models import create_generator, spec_for
from isp_search.models.checkpoint import save_generator
from isp_search.ssim import ms_ssim, ms_ssim_scales, ssim

from datasets import dataset


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "isp_search.cli", *map(str, args)], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def _pair(rng, shape):
    a = rng.random(shape).astype(np.float32)
    b = np.clip(0.7 * a + 0.3 * rng.random(shape) + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return a, b


def test_psnr_hand_computed_per_image_mean():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])  # mse 1e-2 -> 20 dB, 1e-4 -> 40 dB
    res = compute(x, y, ["psnr"], "random")
    assert res["psnr"] == pytest.approx(30.0, abs=1e-4) and res["n_images"] == 2
    assert "lpips_weights" not in res  # nothing here depends on pretrained weights


def test_ssim_matches_skimage_with_tf_settings():
    a, b = _pair(np.random.default_rng(0), (1, 48, 40, 3))
    ref = structural_similarity(a[0], b[0], channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert float(ssim(_nchw(a), _nchw(b))) == pytest.approx(ref, abs=1e-5)
    assert compute(_nchw(a), _nchw(a), ["ssim"], "random")["ssim"] == pytest.approx(1.0, abs=1e-6)


_TF_REFERENCE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
d, out = np.load(sys.argv[1]), {}
for n in sys.argv[3].split(","):
    out["ssim_" + n] = tf.image.ssim(d["a_" + n], d["b_" + n], max_val=1.0).numpy()
    if n.startswith("ms5"):
        out["ms_" + n] = tf.image.ssim_multiscale(d["a_" + n], d["b_" + n], max_val=1.0).numpy()
np.savez(sys.argv[2], **out)
"""


def test_ssim_and_ms_ssim_match_tensorflow(tmp_path):
    """Against tf.image.ssim / ssim_multiscale themselves (in a subprocess: TensorFlow stays out of pytest)."""
    rng = np.random.default_rng(1)
    cases = {"even": (2, 48, 40, 3), "odd": (1, 37, 53, 3), "ms5": (1, 176, 180, 3), "ms5odd": (1, 161, 171, 3)}
    arrays = {}
    for name, shape in cases.items():
        arrays[f"a_{name}"], arrays[f"b_{name}"] = _pair(rng, shape)
    np.savez(tmp_path / "in.npz", **arrays)
    r = subprocess.run([sys.executable, "-c", _TF_REFERENCE, tmp_path / "in.npz", tmp_path / "out.npz",
                        ",".join(cases)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    ref = np.load(tmp_path / "out.npz")
    for name, shape in cases.items():
        a, b = _nchw(arrays[f"a_{name}"]), _nchw(arrays[f"b_{name}"])
        np.testing.assert_allclose(ssim(a, b).numpy(), ref[f"ssim_{name}"], atol=1e-5, err_msg=name)
        if name.startswith("ms5"):  # TF's smallest 5-scale size is 161 px (odd sides padded before pooling)
            assert ms_ssim_scales(*shape[1:3]) == 5
            np.testing.assert_allclose(ms_ssim(a, b).numpy(), ref[f"ms_{name}"], atol=1e-5, err_msg=name)


def test_ms_ssim_identity_monotone_and_small_image_rule():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 96, 96)
    vals = [compute(x, (x + s * torch.randn_like(x)).clamp(0, 1), ["ms_ssim"], "random") for s in (0.0, 0.05, 0.2)]
    assert vals[0]["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert vals[0]["ms_ssim"] > vals[1]["ms_ssim"] > vals[2]["ms_ssim"] > 0
    assert vals[0]["ms_ssim_scales"] == 4  # 96 -> 48 -> 24 -> 12; a fifth scale (6 px) cannot hold the window
    assert ms_ssim_scales(161, 300) == 5 and ms_ssim_scales(160, 160) == 4 and ms_ssim_scales(64, 64) == 3
    assert ms_ssim_scales(21, 21) == 2 and ms_ssim_scales(11, 11) == 1
    with pytest.raises(UserError, match="at least 11x11"):
        compute(torch.rand(1, 3, 10, 16), torch.rand(1, 3, 10, 16), ["ms_ssim"], "random")


@pytest.mark.parametrize("name", ["lpips", "dists"])
def test_learned_metrics_random_weights_are_labelled(name):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    same = compute(x, x, [name], "random")
    other = compute(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1), [name], "random")
    assert same[name] == pytest.approx(0.0, abs=1e-6) and other[name] > 1e-4
    assert same["lpips_weights"] == other["lpips_weights"] == "random"


def test_lpips_pretrained_path_uses_local_files_only(tmp_path, monkeypatch):
    """Pretrained mode: the AlexNet from the weights folder, the heads from the lpips wheel; VGG-16 missing -> DISTS
    fails naming the file. (The AlexNet here is a stand-in with the real architecture; no download happens.)"""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(weights.ENV, str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    alex = weights.load_alexnet("random")
    torch.nn.init.normal_(alex.features[0].weight)  # something the file must bring back
    torch.save(alex.state_dict(), tmp_path / "w" / "alexnet-owt-7be5be79.pth")
    net = build_lpips("pretrained")
    assert torch.equal(net.net.slice1[0].weight, alex.features[0].weight)
    heads = torch.load(weights.find("lpips_alex_v0.1"), map_location="cpu", weights_only=True)  # saved from CUDA
    assert torch.equal(net.lin2.model[1].weight, heads["lin2.model.1.weight"])
    ev = Evaluator(["lpips"], "pretrained")
    x = torch.rand(1, 3, 32, 32)
    ev.update(x, x.flip(-1))
    assert ev.result()["lpips_weights"] == "pretrained" and ev.result()["lpips"] > 0
    with pytest.raises(UserError, match="vgg16-397923af.pth.*weights fetch"):
        build_dists("pretrained")


def test_evaluator_is_reusable_and_directions_are_declared():
    ev = Evaluator(["psnr", "ssim"], "random")
    x = torch.rand(3, 3, 16, 16)
    for _ in range(2):
        ev.reset()
        ev.update(x[:2], x[:2] * 0.5)
        ev.update(x[2:], x[2:] * 0.5)
        assert ev.result()["n_images"] == 3
    for n in METRICS.names():
        assert direction(n) == ("min" if METRICS.get(n).lower_better else "max")
    assert direction("lpips") == direction("dists") == "min" and direction("val/psnr") == direction("ms_ssim") == "max"
    with pytest.raises(UserError, match="did you mean 'psnr'"):
        direction("psnrr")


def test_resolver_order_hf_cache_wheels_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv(weights.ENV, raising=False)
    with pytest.raises(UserError, match=r"'vgg19' \(vgg19-dcbb9e9d.pth.*not found in .*isp-search weights fetch"):
        weights.require("vgg19")
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "vgg19-dcbb9e9d.pth").write_bytes(b"x")
    assert weights.require("vgg19") == ckpt / "vgg19-dcbb9e9d.pth"
    mine = weights.set_weights_dir(tmp_path)  # --weights-dir wins over torch's cache
    (mine / "vgg19-dcbb9e9d.pth").write_bytes(b"y")
    assert weights.find("vgg19") == mine / "vgg19-dcbb9e9d.pth"
    snap = tmp_path / "hf" / "hub" / "models--timm--vit_base_patch16_224.orig_in21k_ft_in1k"
    (snap / "snapshots" / "abc").mkdir(parents=True)
    (snap / "refs").mkdir()
    (snap / "refs" / "main").write_text("abc")
    (snap / "snapshots" / "abc" / "model.safetensors").write_bytes(b"z")
    assert weights.find("vit_b16") == snap / "snapshots" / "abc" / "model.safetensors"
    # the wheels' LPIPS heads and DISTS alpha/beta are the very files pyiqa would download
    for name in ("lpips_alex_v0.1", "dists_alpha_beta"):
        w = weights.WEIGHTS.get(name)
        assert weights.sha256_matches(weights.find(name), w.sha256) and w.sha256 in w.filename
    with pytest.raises(UserError, match="backbone_weights: 'imagenet' is not valid"):
        weights.load_alexnet("imagenet")
    with pytest.raises(UserError, match="not a folder"):
        weights.set_weights_dir(tmp_path / "nope")


@pytest.mark.slow  # two CLIs in fresh processes, isolated from this process's weights folder (~11 s)
def test_fetch_verifies_hash_and_fails_in_one_line(tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(b"weights")

    sha = hashlib.sha256(b"weights").hexdigest()[:8]
    ok = weights.WeightFile("t", "t-file.pth", src.as_uri(), sha, "test")
    assert weights.fetch(tmp_path / "dest", [ok]) == ["t"] and (tmp_path / "dest" / "t-file.pth").read_bytes()
    bad = weights.WeightFile("b", "b-file.pth", src.as_uri(), "00000000", "test")
    with pytest.raises(UserError, match="could not download b-file.pth.*invalid hash"):
        weights.fetch(tmp_path / "dest", [bad])
    assert not (tmp_path / "dest" / "b-file.pth").exists()
    # the CLI without a reachable network (a proxy on a closed port): exit 2, one line, no traceback
    env = {"TORCH_HOME": str(tmp_path / "t"), "HF_HOME": str(tmp_path / "h"), "HF_HUB_OFFLINE": "1",
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", weights.ENV: ""}
    r = _cli("weights", "fetch", "--dir", tmp_path / "d", env=env)
    assert r.returncode == 2 and r.stderr.startswith("isp-search: error: weights fetch: could not download")
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = _cli("weights", "status", "--json", env=env)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert r.returncode == 0 and rows["vgg19"]["path"] is None and rows["dists_alpha_beta"]["path"]


def _ground_truth(root, split: str) -> list[np.ndarray]:
    """The split's ground-truth photos ({split}/fujifilm/{i}.png) in numeric order, read straight from the files
    (PIL, not the project's readers), float (H, W, 3) in [0, 1]."""
    files = sorted((root / split / "fujifilm").glob("*.png"), key=lambda f: int(f.stem))
    return [np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) / 255.0 for f in files]


def _psnr_np(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((pred - gt) ** 2), 1e-10)))


def test_eval_scores_against_the_paired_ground_truth(synth_root, tmp_path, monkeypatch, capsys):
    """`isp-search eval` (in process) and evaluate_model score the model's output against the split's own
    ground-truth files: a real model's metrics equal the ones computed here against those files, and a model whose
    output is that ground truth scores perfectly."""

    gts = _ground_truth(synth_root, "test")
    assert len(gts) == 4
    torch.manual_seed(0)
    model = create_generator("efficient_isp")
    ck = save_generator(tmp_path / "ck.pt", model, "efficient_isp", "paper")
    assert main(["eval", "--weights", str(ck), "--data", str(synth_root), "--format", "mai2022", "--split", "test",
                 "--backbone-weights", "random", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_images"] == 4 and res["lpips_weights"] == "random" and res["ms_ssim_scales"] == 3
    assert all(np.isfinite(res[k]) for k in ("psnr", "ssim", "ms_ssim", "lpips", "dists"))
    ds = dataset(synth_root, "mai2022", "test", spec_for("efficient_isp"), with_reference=False)
    model.train()
    mine = evaluate_model(model, spec_for("efficient_isp"), ds, "random", names=["psnr", "ssim"], batch_size=2)
    assert model.training and mine["n_images"] == 4
    assert mine["psnr"] == pytest.approx(res["psnr"], abs=1e-4) and mine["ssim"] == pytest.approx(res["ssim"], abs=1e-5)
    model.eval()
    with torch.no_grad():  # the same model's outputs against the ground-truth files, scored here
        outs = [model(ds[i]["input"][None]).clamp(0, 1)[0].permute(1, 2, 0).double().numpy() for i in range(4)]
    assert res["psnr"] == pytest.approx(np.mean([_psnr_np(o, g) for o, g in zip(outs, gts)]), abs=1e-3)
    files = compute(torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2).float(),
                    torch.from_numpy(np.stack(gts)).permute(0, 3, 1, 2).float(), ["ssim", "lpips", "dists"], "random")
    for k in ("ssim", "lpips", "dists"):
        assert res[k] == pytest.approx(files[k], abs=1e-4), k

    class Oracle(torch.nn.Module):
        """Outputs the ground truth of the image it is called on (the split is read in numeric file order)."""

        def __init__(self):
            super().__init__()
            self.calls = 0
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # evaluate_model takes the device from a parameter

        def forward(self, x):
            gt = torch.from_numpy(gts[self.calls]).float().permute(2, 0, 1)[None]
            self.calls += 1
            return gt.expand(x.shape[0], -1, -1, -1)

    oracle = Oracle()
    perfect = evaluate_model(oracle, spec_for("efficient_isp"), ds, "random")
    assert oracle.calls == 4 and perfect["n_images"] == 4
    assert perfect["psnr"] == pytest.approx(100.0)  # the PSNR_MSE_FLOOR cap: identical images
    assert perfect["ssim"] == pytest.approx(1.0, abs=1e-5) and perfect["ms_ssim"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["lpips"] == pytest.approx(0.0, abs=1e-6) and perfect["dists"] == pytest.approx(0.0, abs=1e-5)
    # pretrained (the default) with no weights anywhere: one line naming the file, before any work
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "t"))
    monkeypatch.delenv(weights.ENV, raising=False)
    code = main(["eval", "--weights", str(ck), "--data", str(synth_root), "--format", "mai2022"])
    err = capsys.readouterr().err
    assert code == 2 and "alexnet-owt-7be5be79.pth" in err and err.count("\n") == 1


def _parsers():
    """(command words, parser) for every subcommand the CLI discovers, nested ones included."""

    out, todo = [], [((), build_parser())]
    while todo:
        words, parser = todo.pop()
        out.append((words, parser))
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                todo += [((*words, name), sub) for name, sub in action.choices.items()]
    return sorted(out, key=lambda wp: wp[0])


def test_top_level_help_runs():
    r = _cli("--help")
    assert r.returncode == 0 and "usage: isp-search" in r.stdout


@pytest.mark.parametrize("words", [w for w, _ in _parsers() if w], ids=lambda w: " ".join(w))
def test_every_subcommand_help_describes_every_option(words, capsys):

    with pytest.raises(SystemExit) as e:
        main([*words, "--help"])
    assert e.value.code == 0 and "usage: isp-search " + " ".join(words) in capsys.readouterr().out
    parser = dict(_parsers())[words]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{' '.join(words)} {action.option_strings} has no help"
