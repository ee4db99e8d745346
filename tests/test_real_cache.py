"""The real-branch feature cache: the same generator and discriminator gradients as recomputing the real
features, filled once per image on disk, refused where the real images change from draw to draw."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isp_search.configio import ConfigError
from isp_search.models import create_generator
from isp_search.train.config import MODE_TERMS
from isp_search.train.real_cache import RealCache
from isp_search.train.step import FrozenNets, build_discriminators, discriminator_step, generator_step

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TERMS = MODE_TERMS["unpaired"]


def _grads(params) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in params])


def _step(gen, nets, discs, batch, cache):
    """One G step (SGD lr=1 on a copy of the weights: the applied update is the gradient) and each D group's
    gradient on its features; returns (generator gradient, discriminator gradients, Branches)."""
    start = [p.detach().clone() for p in gen.parameters()]
    _, br = generator_step(gen, torch.optim.SGD(gen.parameters(), lr=1.0), batch, nets, discs,
                           {t: 1.0 for t in TERMS}, True, eps=1e-30, d_terms=list(discs), real_cache=cache)
    g = torch.cat([(a - p.detach()).flatten() for a, p in zip(start, gen.parameters())])
    with torch.no_grad():
        for p, a in zip(gen.parameters(), start):
            p.copy_(a)
    d = {}
    for t, disc in discs.items():
        discriminator_step([t], br, discs, torch.optim.SGD(disc.parameters(), lr=0.0), 1000.0, None)
        d[t] = _grads(disc.parameters())
    return g, d, br


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_cached_real_features_give_the_same_gradients(tmp_path):
    torch.manual_seed(0)
    nets = FrozenNets(TERMS, "random", vit_img_size=32)
    discs = build_discriminators(TERMS, nets, (32, 32), True, torch.device("cpu"))
    gen = create_generator("efficient_isp")
    n = 4
    images = {"input": torch.rand(n, 4, 16, 16), "target": torch.rand(n, 3, 32, 32),
              "reference": torch.rand(n, 3, 32, 32)}
    ids = {"index": torch.tensor([3, 0, 2, 1]), "target_index": torch.tensor([1, 2, 0, 3])}
    batch = {**images, **ids}
    cache = RealCache(tmp_path / "real", {"sample": n, "target": n}, announce=False)
    order = [2, 0, 3, 1]  # fill from another batch composition, so the read rows come from other computations
    _step(gen, nets, discs, {k: v[order] for k, v in batch.items()}, cache)
    assert cache.misses == 3 and cache.hits == 0  # content (by sample), vit and alex_gray (by target)
    files = sorted(p.name for p in (tmp_path / "real").iterdir() if not p.name.startswith("."))
    assert "alex_gray.1.bin" in files and "content.filled" in files and "vit.json" in files
    assert cache.nbytes() > 0

    g_cached, d_cached, br = _step(gen, nets, discs, batch, cache)
    assert cache.hits == 3 and cache.misses == 3  # every real feature read back, none recomputed
    g_plain, d_plain, br_plain = _step(gen, nets, discs, batch, None)
    assert _close(br.real("vit"), br_plain.real("vit")) < 1e-6
    assert _close(g_cached, g_plain) < 1e-6
    for t in discs:
        assert _close(d_cached[t], d_plain[t]) < 1e-6, t
    again = RealCache(tmp_path / "real", {"sample": n, "target": n}, announce=False)  # another process's view
    feats = again.get("alex_gray", "target", ids["target_index"], lambda: pytest.fail("recomputed"))
    assert _close(feats[1], br_plain.real("alex_gray")[1]) < 1e-6


@pytest.mark.parametrize("extra", [["data.augment=true"], ["data.patch_size=32"]])
def test_cache_real_refused_where_real_images_change(extra):
    from isp_search.train import load_train_config

    with pytest.raises(ConfigError) as e:
        load_train_config(CONFIGS / "smoke_unpaired.yaml", ["features.cache_real=true", "data.patch_size=null", *extra])
    msg = str(e.value)
    assert "features.cache_real" in msg and len(msg.splitlines()) == 1


def test_training_with_cache_real_fills_it_once(synth_root, tmp_path, monkeypatch):
    from isp_search.train import apply_overrides, load_train_config, train

    monkeypatch.setenv("ISP_SEARCH_REAL_CACHE", str(tmp_path / "real"))
    cfg = apply_overrides(load_train_config(CONFIGS / "smoke_unpaired.yaml"), {
        "data.root": str(synth_root), "data.synthetic": False, "data.patch_size": None, "data.eval_limit": 1,
        "features.cache_real": True, "train.steps": 2, "train.eval_interval": 2, "train.batch_size": 4,
        "train.progress": False})
    assert train(cfg, tmp_path / "run")["status"] == "completed"
    (folder,) = (tmp_path / "real").iterdir()
    import numpy as np

    filled = np.fromfile(folder / "vit.filled", dtype=np.uint8)
    assert filled.sum() >= 4  # the first step's targets, stored as drawn
