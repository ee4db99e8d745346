"""bench-train tells the whole truth: the textbook DLA beside ours (backward counts), the real-feature cache's
FLOPs drop, CPU attention FLOPs, and D(real) computed once per D-step step."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from isp_search.cli import main
from isp_search.models import create_generator
from isp_search.train.config import MODE_TERMS
from isp_search.train.step import (
    FrozenNets,
    GeneratorStepOptions,
    build_discriminators,
    discriminator_step,
    generator_step,
)

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_against_naive_and_cache_counts(tmp_path, capsys):
    from isp_search.data.synth import synthesize

    root = synthesize(tmp_path / "mai2022", "mai2022", n_train=4, n_val=2, n_test=2, seed=0, size=32)
    code = main(["bench-train", str(CONFIGS / "smoke_unpaired.yaml"), "--steps", "1", "--json", "--against-naive",
                 "--compare-cache", "--set", f"data.root={root}", "--set", "data.synthetic=false",
                 "--set", "data.patch_size=null"])
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    branches = {"content", "vit", "alex_gray"}
    assert res["n_branches"] == 3 and res["n_terms_with_branch"] == 4  # content, adv_color, adv_relu1, adv_relu4
    assert res["frozen_backward_passes_by_branch"] == {b: 1.0 for b in branches}  # ours: one per branch
    naive = res["naive"]
    assert naive["frozen_backward_passes"] == res["n_terms_with_branch"] + res["n_branches"]
    assert naive["frozen_backward_passes_by_branch"] == {"content": 2.0, "vit": 2.0, "alex_gray": 3.0}
    assert res["naive_ratio"] > 0 and res["naive_flops_ratio"] > 1  # counts and FLOPs, not times, are asserted
    cached = res["cache_real_variant"]
    assert cached["flops_per_step"] < res["flops_per_step"] and cached["cache_bytes"] > 0
    assert set(res["d_every"]) == {"color", "texture"} and {"d_step_color", "d_step_texture"} <= set(res["time_ms"])


def test_cpu_attention_flops_are_counted():
    from isp_search.diagnostics.bench_train import count_flops

    q = torch.rand(2, 4, 16, 8, requires_grad=True)
    fwd = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert fwd == 2 * 2 * (2 * 4 * 16 * 16 * 8)  # QKᵀ and PV, 2 FLOPs per multiply-add
    both = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward())
    assert both > 2 * fwd


def test_discriminator_reads_real_features_once_per_d_step_step():
    """On a D-step step each discriminator runs 3 times — D(fake) in the G loss, D(real) shared by the G loss and
    the D loss, D(fake) in the D loss — not 4, and its gradient is the one recomputing D(real) gives."""
    torch.manual_seed(0)
    terms = MODE_TERMS["unpaired"]
    nets = FrozenNets(terms, "random", vit_img_size=32)
    discs = build_discriminators(terms, nets, (32, 32), True, torch.device("cpu"))
    gen = create_generator("efficient_isp")
    batch = {"input": torch.rand(2, 4, 16, 16), "target": torch.rand(2, 3, 32, 32),
             "reference": torch.rand(2, 3, 32, 32)}
    mult = {t: 1.0 for t in terms}
    adv = list(discs)
    frozen = torch.optim.SGD(gen.parameters(), lr=0.0)

    def d_grads(br) -> dict[str, torch.Tensor]:
        out = {}
        for t in adv:
            discriminator_step([t], br, discs, torch.optim.SGD(discs[t].parameters(), lr=0.0), 1000.0, None)
            out[t] = torch.cat([p.grad.flatten() for p in discs[t].parameters()])
        return out

    # D(real) recomputed
    want = d_grads(generator_step(gen, frozen, batch, nets, discs, mult, GeneratorStepOptions(True))[1])
    calls = {t: 0 for t in adv}
    handles = [discs[t].register_forward_pre_hook(lambda *_, t=t: calls.__setitem__(t, calls[t] + 1)) for t in adv]
    try:
        got = d_grads(generator_step(gen, frozen, batch, nets, discs, mult,
                                         GeneratorStepOptions(True, d_terms=adv))[1])
    finally:
        for h in handles:
            h.remove()
    assert calls == {t: 3 for t in adv}
    for t in adv:
        assert torch.allclose(got[t], want[t], rtol=1e-5, atol=1e-7 * float(want[t].abs().max())), t
