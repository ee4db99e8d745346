"""The real-branch feature cache: the same generator and discriminator gradients as recomputing the real
features, filled once per image on disk, refused where the real images change from draw to draw."""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from isp_search.configio import ConfigError
from isp_search.data.datasets import make_datasets
from isp_search.models import create_generator
from isp_search.train.config import MODE_TERMS, apply_overrides, load_train_config
from isp_search.train.real_cache import RealCache, open_real_cache
from isp_search.train.real_cache_build import cached_branches, covering_pairing, fill_real_cache
from isp_search.train.step import (
    Branches,
    FrozenNets,
    GeneratorStepOptions,
    build_discriminators,
    discriminator_step,
    generator_step,
)

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
                           {t: 1.0 for t in TERMS},
                           GeneratorStepOptions(True, eps=1e-30, d_terms=list(discs), real_cache=cache))
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


def _first_batch(args, kwargs) -> dict:
    """The batch argument of a ``generator_step`` call, wherever its signature puts it."""
    return next(a for a in (*args, *kwargs.values()) if isinstance(a, dict) and "input" in a)


@pytest.mark.parametrize("mode", [True, "auto"])  # auto: on, since the images are whole and unaugmented
def test_training_with_cache_real_computes_each_real_image_once(synth_root, tmp_path, monkeypatch, capfd, mode):
    """Two epochs of training: every frozen network sees each distinct real image exactly once (epoch 1 fills the
    cache; epoch 2 draws every image again and reads all of it), counted by a forward hook on the networks."""
    import numpy as np

    from isp_search.train import apply_overrides, load_train_config, loop, train

    rows: Counter = Counter()  # real (no-gradient) images through each frozen network, from the first G step on
    seen: dict[str, list[int]] = {"index": [], "target_index": []}
    active, handles = [False], []

    def count(name, module, args, output):
        if active[0] and not torch.is_grad_enabled():
            rows[name] += args[0].shape[0]

    original_init, original_step = FrozenNets.__init__, loop.generator_step

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        handles.extend(m.register_forward_hook(functools.partial(count, n)) for n, m in self.named_children())

    def step(*args, **kwargs):
        active[0] = True  # the discriminators' size probe before training is not a real image
        batch = _first_batch(args, kwargs)
        for k in seen:
            seen[k] += batch[k].tolist()
        return original_step(*args, **kwargs)

    monkeypatch.setattr(FrozenNets, "__init__", init)
    monkeypatch.setattr(loop, "generator_step", step)
    monkeypatch.setenv("ISP_SEARCH_REAL_CACHE", str(tmp_path / "real"))
    cfg = apply_overrides(load_train_config(CONFIGS / "smoke_unpaired.yaml"), {
        "data.root": str(synth_root), "data.synthetic": False, "data.patch_size": None, "data.eval_limit": 1,
        "features.cache_real": mode, "train.steps": 4, "train.eval_interval": 4, "train.batch_size": 4,
        "train.progress": False})
    try:
        assert train(cfg, tmp_path / "run")["status"] == "completed"
    finally:
        for h in handles:  # the frozen networks are shared process-wide (step._NET_CACHE)
            h.remove()
    samples, targets = set(seen["index"]), set(seen["target_index"])
    assert len(seen["index"]) == 16 and len(samples) == len(targets) == 8  # two epochs: every image drawn twice
    # content: VGG on each RAW sample's reference; vit and alex_gray: ViT and AlexNet on each target photo
    assert dict(rows) == {"vgg": len(samples), "vit": len(targets), "alex": len(targets)}
    (folder,) = (tmp_path / "real").iterdir()
    for branch, n in (("content", len(samples)), ("vit", len(targets)), ("alex_gray", len(targets))):
        assert np.fromfile(folder / f"{branch}.filled", dtype=np.uint8).sum() == n, branch
    if mode == "auto":
        assert "features.cache_real auto: on (whole, unaugmented images)" in capfd.readouterr().err


@pytest.mark.parametrize("extra, why", [({"data.patch_size": 32}, "data.patch_size is 32"),
                                        ({"data.augment": True}, "data.augment is true")])
def test_cache_real_auto_is_off_where_real_images_change(synth_root, tmp_path, capfd, extra, why):
    from isp_search.data.datasets import make_datasets
    from isp_search.train import apply_overrides, load_train_config
    from isp_search.train.real_cache import open_real_cache

    cfg = apply_overrides(load_train_config(CONFIGS / "smoke_unpaired.yaml"), {
        "data.root": str(synth_root), "data.synthetic": False, "data.patch_size": None, "train.progress": False,
        **extra})
    assert cfg.features.cache_real == "auto"  # the default
    ds = make_datasets(cfg)["train"]
    assert open_real_cache(cfg, ds, None, torch.device("cpu"), "float32", tmp_path / "real") is None
    assert f"features.cache_real auto: off, {why}" in capfd.readouterr().err
    assert not (tmp_path / "real").exists()


def test_branch_without_completed_manifest_is_removed_and_refilled(tmp_path, capfd):
    """A writer that stopped between its first manifest and the completed flag leaves files nobody may read."""
    folder, keys = tmp_path / "real", torch.arange(4)
    cache = RealCache(folder, {"sample": 4, "target": 4}, announce=False)
    first = cache.get("content", "sample", keys, lambda: torch.rand(4, 8, 2, 2))
    manifest = json.loads((folder / "content.json").read_text())
    assert manifest["completed"] is True and manifest["outputs"][0]["bytes"] == 4 * 8 * 2 * 2 * 4
    (folder / "content.json").write_text(json.dumps({**manifest, "completed": False}))
    capfd.readouterr()
    again = RealCache(folder, {"sample": 4, "target": 4}, announce=False)
    err = capfd.readouterr().err
    assert again.rebuilt and "not completed" in again.rebuilt and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    fresh = torch.rand(4, 8, 2, 2)
    assert torch.equal(again.get("content", "sample", keys, lambda: fresh), fresh)  # computed, not the old rows
    assert again.misses == 1 and not torch.equal(fresh, first)


def test_truncated_cache_is_rebuilt_not_read(synth_root, tmp_path, capfd):
    """A .bin cut short on disk: the next open removes the folder's files (one line says so) and the fill computes
    every row again; what the cache then returns equals features computed freshly, without a cache."""
    cfg = apply_overrides(load_train_config(CONFIGS / "smoke_unpaired.yaml"), {
        "data.root": str(synth_root), "data.synthetic": False, "data.patch_size": None, "train.progress": False})
    root = tmp_path / "real"
    first = fill_real_cache(cfg, root)
    assert first["built"] and first["rebuilt"] is None
    folder = Path(first["folder"])
    victim = folder / "alex_gray.1.bin"
    size = victim.stat().st_size
    os.truncate(victim, size // 2)
    capfd.readouterr()
    again = fill_real_cache(cfg, root)
    err = capfd.readouterr().err
    assert again["built"] and "alex_gray.1.bin" in again["rebuilt"], again
    assert sum("partial or corrupt" in line for line in err.splitlines()) == 1, err
    assert victim.stat().st_size == size and again["folder"] == first["folder"]

    ds = make_datasets(cfg)["train"]
    nets = FrozenNets(cfg.active_terms, cfg.backbone_weights, cfg.features.vit_img_size, cfg.features.input)
    cache = open_real_cache(cfg, ds, nets, torch.device("cpu"), "float32", root)
    assert cache.rebuilt is None  # sound now
    ds.pairing = covering_pairing(ds)
    batch = default_collate([ds[k] for k in range(len(ds))])
    fresh = Branches(nets, batch["target"], batch, cfg.content_lab, content_ref=cfg.content_vs_reference)
    read = Branches(nets, batch["target"], batch, cfg.content_lab, content_ref=cfg.content_vs_reference,
                    real_cache=cache)
    for b in cached_branches(cfg):
        got, want = read.real(b), fresh.real(b)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert g.shape == w.shape and _close(g, w) < 1e-5, b
    assert cache.hits == 3 and cache.misses == 0  # every branch read, none recomputed
