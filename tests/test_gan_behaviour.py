"""The GAN behaves as a GAN: on fixed seeded batches with random frozen networks, a discriminator step raises
D(real) − D(fake) for every discriminator, a generator step on the adversarial terms alone raises D(fake) − D(real),
the D loss is the relativistic loss plus R1/R2 on the *feature tensors*, and DLA gives each generator term the
update share docs/method.md §5 gives (norm mᵢ), all checked against computations written here independently of the
trainer."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from isp_search.models import create_generator
from isp_search.train.config import MODE_TERMS
from isp_search.train.losses import dped_kernel
from isp_search.train.step import (
    FrozenNets,
    GeneratorStepOptions,
    build_discriminators,
    discriminator_step,
    generator_step,
)

torch.set_num_threads(1)
TERMS = MODE_TERMS["unpaired"]  # content, adv_color, adv_relu1, adv_relu4, tv
ADV = ("adv_color", "adv_relu1", "adv_relu4")
GAMMA = 1000.0  # the paper default: the behaviour must hold with the penalty at full strength
HW = 32


def smooth_images(n: int, g: torch.Generator, hw: int = HW) -> torch.Tensor:
    """Natural-ish images in [0, 1]: upsampled low-resolution colour noise (real and fake differ in statistics)."""
    low = torch.rand(n, 3, hw // 8, hw // 8, generator=g)
    return F.interpolate(low, size=(hw, hw), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    nets = FrozenNets(TERMS, "random", vit_img_size=HW)
    batch = {"input": torch.rand(4, 4, HW // 2, HW // 2, generator=g), "target": smooth_images(4, g),
             "reference": smooth_images(4, g) * 0.6}
    return nets, batch


def fresh(nets, seed: int = 0):
    """A seeded generator and discriminators (the same weights every call)."""
    torch.manual_seed(seed)
    gen = create_generator("efficient_isp")
    discs = build_discriminators(TERMS, nets, (HW, HW), True, torch.device("cpu"))
    return gen, discs


# ---- an independent implementation of the features each discriminator judges (docs/method.md §4) ---------------

def features(nets, term: str, img: torch.Tensor) -> torch.Tensor:
    """What discriminator ``term`` sees of image ``img``: ViT tokens of the DPED-blurred RGB, or the AlexNet trunk's
    relu1/relu4 of the grayscale (ITU-R 601 luma) image."""
    if term == "adv_color":
        k = dped_kernel().expand(3, 1, 21, 21)
        return nets.vit(F.conv2d(img, k, padding=10, groups=3))
    gray = (0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3])
    return nets.alex(gray)[0 if term == "adv_relu1" else 1]


def gaps(nets, discs, fake_img: torch.Tensor, real_img: torch.Tensor) -> dict[str, float]:
    """D(real) − D(fake) per discriminator, on the images' features."""
    with torch.no_grad():
        return {t: float(discs[t](features(nets, t, real_img)).mean() - discs[t](features(nets, t, fake_img)).mean())
                for t in ADV}


def d_steps(nets, batch, gen, discs, n: int) -> list[dict[str, float]]:
    """``n`` discriminator steps (Adam 1e-4, the paper's γ and clip) on one G step's feature cache; the gaps
    D(real) − D(fake) before and after each."""
    _, br = generator_step(gen, torch.optim.SGD(gen.parameters(), lr=0.0), batch, nets, discs,
                           {t: 1.0 for t in TERMS}, GeneratorStepOptions(True, d_terms=ADV))  # lr 0: only the feature cache
    with torch.no_grad():
        fake = gen(batch["input"])
    opts = {t: torch.optim.Adam(discs[t].parameters(), lr=1e-4, betas=(0.5, 0.9)) for t in ADV}
    traj = [gaps(nets, discs, fake, batch["target"])]
    for _ in range(n):
        for t in ADV:
            discriminator_step([t], br, discs, opts[t], GAMMA, 1.0)
        traj.append(gaps(nets, discs, fake, batch["target"]))
    return traj


def test_d_step_raises_real_minus_fake_for_every_discriminator(setup):
    nets, batch = setup
    gen, discs = fresh(nets)
    with torch.no_grad():
        fake = gen(batch["input"])
        scale = {t: float(discs[t](features(nets, t, fake)).abs().mean()) for t in ADV}
    traj = d_steps(nets, batch, gen, discs, 3)
    for t in ADV:
        seq = [g[t] for g in traj]
        assert all(b > a + 1e-4 * scale[t] for a, b in itertools.pairwise(seq)), (t, seq)  # every step, not just net


def test_d_loss_is_relativistic_plus_r1_r2_on_feature_tensors(setup):
    """The gradient the D step applies equals ∇ of softplus(−(D(r) − D(f))) + γ/2·E‖∇_r D‖² + γ/2·E‖∇_f D‖²,
    the penalties taken on the discriminator's input features (not on the images)."""
    nets, batch = setup
    gen, discs = fresh(nets)
    _, br = generator_step(gen, torch.optim.SGD(gen.parameters(), lr=0.0), batch, nets, discs,
                           {t: 1.0 for t in TERMS}, GeneratorStepOptions(True, d_terms=ADV))  # as train() before a D step
    with torch.no_grad():
        fake_img = gen(batch["input"])
    for t in ADV:
        disc = discs[t]
        real = features(nets, t, batch["target"]).detach().requires_grad_(True)
        fake = features(nets, t, fake_img).detach().requires_grad_(True)
        d_r, d_f = disc(real), disc(fake)
        (gr,) = torch.autograd.grad(d_r.sum(), real, create_graph=True)
        (gf,) = torch.autograd.grad(d_f.sum(), fake, create_graph=True)
        r1 = GAMMA / 2 * gr.pow(2).flatten(1).sum(1).mean()
        r2 = GAMMA / 2 * gf.pow(2).flatten(1).sum(1).mean()
        loss = F.softplus(-(d_r - d_f)).mean() + r1 + r2
        want = torch.autograd.grad(loss, list(disc.parameters()))
        metrics = discriminator_step([t], br, discs, torch.optim.SGD(disc.parameters(), lr=0.0), GAMMA, None)
        key = "d_" + t.removeprefix("adv_")
        assert metrics[f"{key}/r1"] == pytest.approx(float(r1), rel=1e-3, abs=1e-9)
        assert metrics[f"{key}/r2"] == pytest.approx(float(r2), rel=1e-3, abs=1e-9)
        for p, w in zip(disc.parameters(), want):
            assert float((p.grad - w).norm()) <= 1e-2 * float(w.norm()) + 1e-20, t  # float32 sums differ a little


@pytest.fixture(scope="module")
def trained_discs(setup):
    """Discriminators after 5 D steps, so each has a gap for the generator to close."""
    nets, batch = setup
    gen, discs = fresh(nets)
    d_steps(nets, batch, gen, discs, 5)
    return {t: {k: v.clone() for k, v in d.state_dict().items()} for t, d in discs.items()}


@pytest.mark.parametrize("term", ADV)
def test_g_step_on_an_adversarial_term_raises_fake_minus_real(setup, trained_discs, term):
    nets, batch = setup
    gen, discs = fresh(nets)
    for t, sd in trained_discs.items():
        discs[t].load_state_dict(sd)
    with torch.no_grad():
        before = -gaps(nets, discs, gen(batch["input"]), batch["target"])[term]
    opt = torch.optim.Adam(gen.parameters(), lr=5e-3, betas=(0.5, 0.9))
    for _ in range(3):
        metrics, _ = generator_step(gen, opt, batch, nets, discs, {term: 1.0}, GeneratorStepOptions(True))
        assert "nonfinite" not in metrics
    with torch.no_grad():
        after = -gaps(nets, discs, gen(batch["input"]), batch["target"])[term]
    assert before != 0 and after > before + 0.05 * abs(before), (term, before, after)


def independent_losses(nets, discs, y: torch.Tensor, batch) -> dict[str, torch.Tensor]:
    """The unpaired loss set written out from docs/method.md §4 (not through the trainer's term functions)."""
    import kornia

    def lab_l3(img):
        return (kornia.color.rgb_to_lab(img)[:, :1] / 100).expand(-1, 3, -1, -1)

    out = {"content": ((nets.vgg(lab_l3(y)) - nets.vgg(lab_l3(batch["reference"])).detach()) ** 2).mean(),
           "tv": ((y[..., :, 1:] - y[..., :, :-1]) ** 2).mean() + ((y[..., 1:, :] - y[..., :-1, :]) ** 2).mean()}
    for t in ADV:
        with torch.no_grad():
            d_real = discs[t](features(nets, t, batch["target"]))
        out[t] = F.softplus(-(discs[t](features(nets, t, y)) - d_real)).mean()
    return out


def test_dla_gives_each_term_norm_m_against_independent_gradients(setup):
    """docs/method.md §5: the applied generator gradient is Σ mᵢ ∇θLᵢ / ‖∇θLᵢ‖ — each term reaches the generator
    with norm mᵢ. Per-term gradients are computed here by full backward passes of the independent losses."""
    nets, batch = setup
    gen, discs = fresh(nets)
    mult = {"content": 0.5, "adv_color": 1.0, "adv_relu1": 2.0, "adv_relu4": 1.5, "tv": 0.25}
    params = list(gen.parameters())
    per_term = {}
    for t in TERMS:
        per_term[t] = torch.autograd.grad(independent_losses(nets, discs, gen(batch["input"]), batch)[t], params)
    norms = {t: torch.sqrt(sum((g ** 2).sum() for g in gs)) for t, gs in per_term.items()}
    expected = [sum(mult[t] / norms[t] * per_term[t][i] for t in TERMS) for i in range(len(params))]
    start = [p.detach().clone() for p in params]
    metrics, _ = generator_step(gen, torch.optim.SGD(params, lr=1.0), batch, nets, discs, mult,
                                GeneratorStepOptions(True, eps=1e-30))
    applied = [a - p.detach() for a, p in zip(start, params)]  # SGD lr 1: the applied gradient
    flat_a = torch.cat([a.flatten() for a in applied])
    for t in TERMS:
        assert metrics[f"dla/norm_{t}"] == pytest.approx(float(norms[t]), rel=1e-3), t
        # the share of term t: the component of the update along its unit gradient direction carries weight m_t
        assert metrics[f"dla/weight_{t}"] * float(norms[t]) == pytest.approx(mult[t], rel=1e-3), t
    flat_e = torch.cat([e.flatten() for e in expected])
    assert torch.allclose(flat_a, flat_e, rtol=1e-3, atol=1e-4 * float(flat_e.abs().max())), (
        float((flat_a - flat_e).norm() / flat_e.norm()))


def test_trainer_logs_dla_weights_that_give_norm_m(synth_root, tmp_path):
    """Through train() itself (dla: true): every logged step's wᵢ = mᵢ / (‖∇θLᵢ‖ + eps) for every term."""
    from pathlib import Path

    from isp_search.train import apply_overrides, load_train_config, train

    cfg = apply_overrides(load_train_config(Path(__file__).resolve().parents[1] / "configs" / "smoke_unpaired.yaml"),
                          {"data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 1,
                           "train.progress": False, "train.steps": 2, "train.eval_interval": 2,
                           "train.log_interval": 1, "losses.adv_relu1": 2.0, "losses.tv": 0.5})
    train(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"]
    assert len(rows) == 2
    for r in rows:
        for t in TERMS:
            want = cfg.multiplier(t) / (r[f"dla/norm_{t}"] + cfg.losses.dla_eps)
            assert r[f"dla/weight_{t}"] == pytest.approx(want, rel=1e-6), t
