"""Losses against hand computations, R1/R2 against finite differences, discriminators and frozen networks."""

from __future__ import annotations

import math

import pytest
import torch

from isp_search.train.discriminators import DISCRIMINATORS, create_discriminator
from isp_search.train.losses import (
    LOSSES,
    blur,
    color_loss,
    discriminator_loss,
    dped_kernel,
    lab_lightness3,
    relativistic_d,
    relativistic_g,
    tv_loss,
    zero_centered_penalty,
)

torch.set_num_threads(1)


def test_dped_kernel_matches_normal_cdf_bins():
    k = dped_kernel(21, 3.0)
    assert k.shape == (21, 21) and abs(float(k.sum()) - 1) < 1e-6
    interval = 7.0 / 21
    lo, hi = -3 - interval / 2, 3 + interval / 2  # DPED: linspace(lo, hi, kernlen + 1)
    edges = [lo + i * (hi - lo) / 21 for i in range(22)]
    cdf = [0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges]
    k1 = [b - a for a, b in zip(cdf, cdf[1:])]
    raw = [[math.sqrt(a * b) for b in k1] for a in k1]
    total = sum(map(sum, raw))
    assert abs(float(k[10, 10]) - raw[10][10] / total) < 1e-7
    assert abs(float(k[0, 3]) - raw[0][3] / total) < 1e-9
    assert torch.allclose(k, k.T)


def test_blur_keeps_constant_interior_and_color_loss():
    x = torch.full((1, 3, 30, 30), 0.25)
    assert torch.allclose(blur(x)[..., 10:20, 10:20], x[..., 10:20, 10:20], atol=1e-6)
    a, b = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    w = dped_kernel().expand(3, 1, 21, 21)
    ref = ((torch.nn.functional.conv2d(a, w, padding=10, groups=3)
            - torch.nn.functional.conv2d(b, w, padding=10, groups=3)) ** 2).mean()
    assert torch.allclose(color_loss(a, b), ref, atol=1e-7)


def test_tv_by_hand():
    y = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    # dx: (1-0)², (5-3)² -> mean 2.5; dy: (3-0)², (5-1)² -> mean 12.5
    assert float(tv_loss(y)) == pytest.approx(15.0)


def test_lab_lightness_of_mid_gray():
    l3 = lab_lightness3(torch.full((1, 3, 2, 2), 0.5))
    assert l3.shape == (1, 3, 2, 2)
    assert float(l3[0, 0, 0, 0]) == pytest.approx(0.53389, abs=2e-4)  # L* of sRGB 0.5 gray is 53.39
    assert torch.equal(l3[:, 0], l3[:, 2])
    y = torch.tensor([-0.2, 0.5, 1.3]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone().requires_grad_()
    lab_lightness3(y).sum().backward()
    assert torch.isfinite(y.grad).all()  # out-of-range outputs (training does not clamp) keep finite gradients


def test_relativistic_by_hand():
    f, r = torch.tensor([0.3, -1.0]), torch.tensor([1.0, 2.0])
    g = (math.log1p(math.exp(0.7)) + math.log1p(math.exp(3.0))) / 2
    d = (math.log1p(math.exp(-0.7)) + math.log1p(math.exp(-3.0))) / 2
    assert float(relativistic_g(f, r)) == pytest.approx(g, rel=1e-6)
    assert float(relativistic_d(r, f)) == pytest.approx(d, rel=1e-6)


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    disc = create_discriminator("texture_cnn", (4, 9, 9)).double()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    gamma = 3.0
    pen = float(zero_centered_penalty(disc(x), x, gamma).detach())
    eps, sq = 1e-6, []
    with torch.no_grad():
        for b in range(2):
            g = torch.zeros(4 * 81, dtype=torch.float64)
            for i in range(4 * 81):
                xp, xm = x.clone(), x.clone()
                xp.view(2, -1)[b, i] += eps
                xm.view(2, -1)[b, i] -= eps
                g[i] = (disc(xp)[b] - disc(xm)[b]) / (2 * eps)
            sq.append(float((g ** 2).sum()))
    assert pen == pytest.approx(gamma / 2 * sum(sq) / 2, rel=1e-5)


@pytest.mark.parametrize("name,shape", [("vit_color_mlp", (4, 768)), ("texture_cnn", (64, 15, 15)),
                                        ("texture_cnn", (256, 3, 3))])
def test_every_discriminator_parameter_changes_after_a_d_step(name, shape):
    torch.manual_seed(0)
    disc = create_discriminator(name, shape)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))  # built after every layer exists
    before = [p.detach().clone() for p in disc.parameters()]
    loss, parts = discriminator_loss(disc, torch.randn(3, *shape), torch.randn(3, *shape), gamma=1000.0)
    assert {"real", "fake", "adv", "r1", "r2"} <= set(parts) and parts["r1"] > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, disc.parameters())]
    assert all(changed), [n for (n, _), c in zip(disc.named_parameters(), changed) if not c]


def test_registries_name_every_term_and_discriminator():
    assert set(DISCRIMINATORS.names()) == {"vit_color_mlp", "texture_cnn"}
    assert {LOSSES.get(t).disc for t in ("adv_color", "adv_relu1", "adv_relu4")} <= set(DISCRIMINATORS.names())
    with pytest.raises(Exception, match="did you mean"):
        DISCRIMINATORS.get("texture_cn")


def test_frozen_networks_have_no_trainable_parameters():
    from isp_search.train.config import TERMS
    from isp_search.train.step import FrozenNets

    nets = FrozenNets(TERMS, "random", vit_img_size=32)
    assert {n for n, _ in nets.named_children()} == {"vgg", "vit", "alex", "lpips", "dists"}
    assert not [n for n, p in nets.named_parameters() if p.requires_grad]
    nets.train()
    assert not any(m.training for m in nets.modules())
    r1, r4 = nets.alex(torch.rand(1, 1, 64, 64))
    assert r1.shape[1] == 64 and r4.shape[1] == 256
    assert nets.vit(torch.rand(1, 3, 40, 40)).shape == (1, 4, 768)  # resized to 32 px: 2x2 tokens, no CLS


@pytest.mark.parametrize("inputs", ["reference", "normalized"])
def test_random_texture_trunk_keeps_signal_scale(inputs):
    """Random AlexNet (no weights here) is variance-preserving: relu4 has unit-order scale and varies across
    images, as the pretrained trunk's does. (PyTorch's default init shrank relu4 to ~0.04 ± 0.01, too flat for a
    discriminator.) [0, 1] inputs (reference) carry a large DC part, so the variation is judged relative to it."""
    from isp_search.train.features import LPIPSAlexTrunk

    torch.manual_seed(0)
    r1, r4 = LPIPSAlexTrunk("random", inputs)(torch.rand(8, 1, 64, 64))
    for feats in (r1, r4):
        rms = feats.pow(2).mean().sqrt()
        assert 0.2 < rms < 5
        assert feats.std(dim=0).mean() > 0.05 * rms


_REPEAT_SCRIPT = r"""
import sys, torch
torch.manual_seed(int(sys.argv[1]))  # a different global seed in each process: the nets must not depend on it
from isp_search.metrics import Evaluator
from isp_search.train.features import LPIPSAlexTrunk, VGGRelu54, ViTTokens
g = torch.Generator().manual_seed(0)
pred, target = torch.rand(2, 3, 48, 48, generator=g), torch.rand(2, 3, 48, 48, generator=g)
state = torch.random.get_rng_state()
res = Evaluator(("lpips", "dists"), "random").update(pred, target)
nets = {"vgg": VGGRelu54("random"), "vit": ViTTokens("random", 32), "alex": LPIPSAlexTrunk("random")}
sums = {n: float(sum(p.double().sum() for p in m.parameters())) for n, m in nets.items()}
assert torch.equal(state, torch.random.get_rng_state()), "building a random network moved the global RNG"
print(repr([res["lpips"].tolist(), res["dists"].tolist(), sums]))
"""


@pytest.mark.slow  # two fresh processes build every random feature network (~11 s on 2 cores)
def test_random_feature_networks_are_identical_in_two_fresh_processes():
    """Random LPIPS/DISTS/VGG/ViT/AlexNet come from a fixed seed per network name, not the global RNG: two
    processes with different global seeds give the same LPIPS and DISTS values and the same weights, and building
    them leaves the global random stream where it was."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _REPEAT_SCRIPT, str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for seed in (1, 2)]
    outs = [(p.communicate(timeout=240), p.returncode) for p in procs]
    for (_, err), code in outs:
        assert code == 0, err[-2000:]
    a, b = (out.strip().splitlines()[-1] for (out, _), _ in outs)
    assert a == b
    lpips_values = eval(a)[0]
    assert len(lpips_values) == 2 and lpips_values[0] != lpips_values[1]  # real per-image values, not constants


@pytest.mark.parametrize("inputs", ["reference", "normalized"])
def test_feature_inputs_reference_and_normalized(inputs):
    """``features.input``: reference = the authors' inputs (grayscale [0, 1] straight into the AlexNet trunk,
    blurred [0, 1] RGB into the ViT; docs/method.md §4.7); normalized = LPIPS's input scaling / the ViT's mean-std."""
    from isp_search.train.features import LPIPS_SCALE, LPIPS_SHIFT, LPIPSAlexTrunk, ViTTokens

    alex = LPIPSAlexTrunk("random", inputs)
    gray = torch.rand(1, 1, 40, 40)
    x = gray.expand(-1, 3, -1, -1)
    if inputs == "normalized":
        x = ((2 * x - 1) - torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)) / torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
    assert torch.allclose(alex(gray)[0], alex.to_relu1(x), atol=1e-6)
    vit = ViTTokens("random", 32, inputs)
    rgb = torch.rand(1, 3, 32, 32)
    mean, std = (0.5, 0.5) if inputs == "normalized" else (0.0, 1.0)
    want = vit.net.forward_features((rgb - mean) / std)[:, vit.net.num_prefix_tokens:]
    assert torch.allclose(vit(rgb), want, atol=1e-5)
    with pytest.raises(ValueError, match="features.input"):
        LPIPSAlexTrunk("random", "imagenet")
