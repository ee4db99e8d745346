"""Dynamic Loss Adaptation: unit gradient norm per term, equality with the naive computation, one frozen backward
per branch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from isp_search.models import create_generator
from isp_search.train.config import MODE_TERMS
from isp_search.train.step import (
    Branches,
    FrozenNets,
    GeneratorStepOptions,
    StepProbes,
    build_discriminators,
    generator_step,
    term_loss,
)

torch.set_num_threads(1)
# Random frozen networks at 32 px give some terms raw norms near 1e-8; a tiny eps makes w·norm = m exact there too.
EPS = 1e-30


@pytest.mark.parametrize("mode", ["unpaired", "paired"])
def test_dla_unit_norms_and_naive_equality_and_one_backward_per_branch(mode):
    torch.manual_seed(0)
    terms = MODE_TERMS[mode]
    lab = mode == "unpaired"
    nets = FrozenNets(terms, "random", vit_img_size=32)
    discs = build_discriminators(terms, nets, (32, 32), lab, torch.device("cpu"))
    gen = create_generator("efficient_isp")
    batch = {"input": torch.rand(2, 4, 16, 16), "target": torch.rand(2, 3, 32, 32),
             "reference": torch.rand(2, 3, 32, 32)}
    mult = {t: (2.0 if t == "tv" else 1.0) for t in terms}
    params = list(gen.parameters())
    start = [p.detach().clone() for p in params]

    # naive: one full backward per term, through the generator and the frozen networks
    naive = {}
    for t in terms:
        y = gen(batch["input"])
        br = Branches(nets, y, batch, lab)
        naive[t] = torch.autograd.grad(term_loss(t, br, discs), params)
    norms = {t: torch.sqrt(sum((g ** 2).sum() for g in gs)) for t, gs in naive.items()}
    expected = [sum(mult[t] / (norms[t] + EPS) * naive[t][i] for t in terms) for i in range(len(params))]

    opt = torch.optim.SGD(params, lr=1.0)  # p_new = p - grad, so the applied gradient is readable
    counter = Counter()
    metrics, _ = generator_step(gen, opt, batch, nets, discs, mult, GeneratorStepOptions(lab, eps=EPS),
                                StepProbes(counter=counter))
    applied = [a - p.detach() for a, p in zip(start, params)]
    for t in terms:
        w = metrics[f"dla/weight_{t}"]
        assert w * metrics[f"dla/norm_{t}"] == pytest.approx(mult[t], abs=1e-4)  # weighted norm = m_i
        assert metrics[f"dla/norm_{t}"] == pytest.approx(float(norms[t]), rel=1e-4)
    for a, e in zip(applied, expected):
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-4)
    branches = {"content", "alex_gray"} | ({"vit"} if mode == "unpaired" else {"lpips", "dists"})
    assert dict(counter) == {b: 1 for b in branches}  # adv_relu1 + adv_relu4 share one AlexNet backward

    # The trainer's own step with the textbook DLA (bench-train --against-naive) applies the same update.
    with torch.no_grad():
        for p, s0 in zip(params, start):
            p.copy_(s0)
    generator_step(gen, opt, batch, nets, discs, mult, GeneratorStepOptions(lab, eps=EPS, textbook_dla=True))
    for a, p, e in zip(start, params, expected):
        assert torch.allclose(a - p.detach(), e, atol=1e-5, rtol=1e-4)
