"""Losses against hand computations, R1/R2 against finite differences, discriminators and frozen networks."""

from __future__ import annotations

import math

import pytest
import torch

from isp_search.train.discriminators import DISCRIMINATORS, create_discriminator
from isp_search.train.losses import (
    LOSSES, blur, color_loss, discriminator_loss, dped_kernel, lab_lightness3, relativistic_d, relativistic_g,
    tv_loss, zero_centered_penalty,
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


def test_random_texture_trunk_keeps_signal_scale():
    """Random AlexNet (no weights here) is variance-preserving: relu4 varies across images at unit scale, as the
    pretrained trunk's does. (PyTorch's default init shrank relu4 to ~0.04 ± 0.01, too flat for a discriminator.)"""
    from isp_search.train.features import LPIPSAlexTrunk

    torch.manual_seed(0)
    r1, r4 = LPIPSAlexTrunk("random")(torch.rand(8, 1, 64, 64))
    for feats in (r1, r4):
        assert 0.2 < feats.pow(2).mean().sqrt() < 5
        assert feats.std(dim=0).mean() > 0.1
