"""A learnability check of the unpaired method on a problem with a known answer (``isp-search check-method``).

The problem: the embedded synthetic RAW (:func:`isp_search.data.synth.synthesize`), and as the unpaired target
domain the ground-truth RGB under a fixed colour cast and tone curve (:func:`target_look`) that the demosaiced
reference lacks. A short pretraining (pixel MSE to the reference) gives a generator with the reference's look; the
unpaired stage (the real :func:`isp_search.train.train`, the unpaired loss set, DLA, the discriminators, random
frozen networks) should then pull the output's colour statistics toward the target domain while keeping the
structure. Measured on the val split (scenes the training never saw), whose known answer is its own ground truth
under the same look: the distance between the mean CIE LAB (L, a*, b*) of the outputs and of those answers before
and after the unpaired stage, and the SSIM of the output's luminance to the reference's.

Then :mod:`isp_search.diagnostics.mechanism` probes the trained models on the val split: each discriminator's margin
D(real) − D(fake), each discriminator update against docs/method.md §4.7's loss (R1/R2 on the feature tensors) and each
generator term's DLA share (docs/method.md §5). :func:`verdict` passes the check only if all of them hold: a GAN that is
broken so that the colour still moves (real and fake swapped in both losses, DLA not applied, R1/R2 on the
images) fails on its mechanism; one broken so that it does not (real and fake swapped in one loss, the
discriminators not learning, the adversarial gradient reversed) fails on the distance as well.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch

from isp_search.data.io import read_rgb, write_rgb
from isp_search.data.synth import synthesize
from isp_search.diagnostics.mechanism import probe
from isp_search.models.checkpoint import load_generator
from isp_search.ssim import ssim
from isp_search.train.config import apply_overrides, train_config_from_dict
from isp_search.train.loop import make_datasets, train
from isp_search.train.losses import LOSSES

CAST_GAINS = (1.18, 1.0, 0.72)  # a warm cast (more red, less blue) in linear-ish RGB
TONE_GAMMA = 0.75  # a brightening tone curve y = x ** 0.75 after the cast


def target_look(rgb: np.ndarray) -> np.ndarray:
    """The target domain's look: ``clip(rgb · CAST_GAINS) ** TONE_GAMMA`` (float RGB (H, W, 3) in [0, 1])."""
    return np.clip(rgb * np.asarray(CAST_GAINS, rgb.dtype), 0.0, 1.0) ** TONE_GAMMA


@dataclass(frozen=True)
class CheckSize:
    """How big the check is (``full``: the command; ``small``: the test)."""

    n_train: int = 32
    n_val: int = 8
    image: int = 64  # synthetic image size (val/test are evaluated whole)
    patch: int = 32  # training patch
    pretrain_steps: int = 300
    unpaired_steps: int = 120
    batch: int = 4
    evals: int = 12  # measurements along the unpaired stage (the verdict takes the median of the last half)


# What the check asserts (:func:`verdict`)
MOVE_BELOW = 0.6  # the distance late in the unpaired stage is below this fraction of the distance before
# "Late": the median over the measurements in the stage's second half. A GAN wanders around its target from one
# step to the next (full check, seed 0, every 20 steps from 120 to 240: distance 4.8, 1.4, 6.2, 18.5, 3.9, 5.4, 6.9),
# so one final value would pass or fail by the luck of where the last step fell.
SSIM_SLACK = 0.1  # structure kept: the outputs' SSIM(L) to the reference at least the lower of the pretrained
# start's and the known answer's own, less this (the answer is the ground truth under the look: its SSIM(L) to the
# noisy RAW's reference is itself 0.47-0.73 by seed, and the tone curve moves L away from the reference's)
D_UPDATE_TOL = 1e-3  # relative error of a discriminator update against docs/method.md §4.7's gradient
DLA_TOL = 1e-3  # |share − ‖∇θLᵢ‖/(‖∇θLᵢ‖ + eps)| of every generator term with DLA on

SIZES = {"full": CheckSize(), "small": CheckSize(n_train=16, n_val=4, pretrain_steps=200, unpaired_steps=60)}


def build_problem(root: Path, size: CheckSize, seed: int = 0) -> Path:
    """Synthesize the RAW/RGB set at ``root`` and replace every RGB file by its :func:`target_look` version."""

    synthesize(root, "mai2022", n_train=size.n_train, n_val=size.n_val, n_test=2, seed=seed, size=size.image)
    for path in sorted(root.glob("*/fujifilm/*.png")):
        write_rgb(path, target_look(read_rgb(path)))
    return root


def configs(root: Path, size: CheckSize, seed: int = 0) -> tuple[Any, Any]:
    """The pretrain and unpaired :class:`TrainConfig` of the check (random frozen networks, CPU)."""

    common = {"backbone_weights": "random",
              "data": {"root": str(root), "format": "mai2022", "patch_size": size.patch, "eval_limit": size.n_val},
              "model": {"arch": "efficient_isp"}, "features": {"vit_img_size": size.patch}}
    run = {"batch_size": size.batch, "seed": seed, "device": "cpu", "progress": False, "log_interval": 10}
    # Pretrain: the pixel MSE to the demosaiced reference does the work (a random VGG content term carries no
    # structure and costs most of the step, as in configs/synth_pretrain.yaml).
    pre = train_config_from_dict({**common, "mode": "pretrain", "name": "check_pretrain",
                                  "losses": {"content": 0.0, "tv": 0.1},
                                  "optim": {"g_lr": 3e-3, "g_beta1": 0.9},
                                  "train": {**run, "batch_size": 8, "steps": size.pretrain_steps,
                                            "eval_interval": size.pretrain_steps}})
    # Unpaired: the paper's loss set and DLA; the discriminators step every G step so they keep pace within a
    # short run on random features (as configs/synth_unpaired.yaml).
    un = train_config_from_dict({**common, "mode": "unpaired", "name": "check_unpaired",
                                 "data": {**common["data"], "pairing": "shuffled"},
                                 "optim": {"g_lr": 1e-3, "d_color_lr": 5e-4, "d_texture_lr": 5e-4,
                                           "d_color_every": 1, "d_texture_every": 1},
                                 "train": {**run, "steps": size.unpaired_steps,
                                           "eval_interval": size.unpaired_steps}})
    return pre, un


def lab_means(images: torch.Tensor) -> torch.Tensor:
    """Mean CIE LAB (L, a*, b*) over every pixel of (N, 3, H, W) sRGB images in [0, 1]."""

    return kornia.color.rgb_to_lab(images.clamp(0, 1)).mean(dim=(0, 2, 3))


def luminance_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (TF settings) of the LAB L channels (/100) of two image batches."""


    la = (kornia.color.rgb_to_lab(a.clamp(0, 1))[:, :1] / 100).expand(-1, 3, -1, -1)
    lb = (kornia.color.rgb_to_lab(b.clamp(0, 1))[:, :1] / 100).expand(-1, 3, -1, -1)
    return float(ssim(la, lb).mean())


@torch.no_grad()
def measure(checkpoint: Path, held_out: dict[str, torch.Tensor], target_lab: torch.Tensor) -> dict[str, float]:
    """Distance of the generator's mean LAB on the held-out batch to the target domain's, luminance SSIM to the
    reference, and PSNR to the known answer (``held_out["target"]``: each val scene's ground truth under the look).
    ``checkpoint``: a ``.pt`` file."""

    gen = load_generator(checkpoint).model.eval()
    out = gen(held_out["input"]).clamp(0, 1)
    ref, answer = held_out["reference"], held_out["target"]
    lab = lab_means(out)
    return {"distance": float((lab - target_lab).norm()), "L": float(lab[0]), "a": float(lab[1]),
            "b": float(lab[2]), "ssim_L": luminance_ssim(out, ref),
            "psnr_to_answer": float(-10 * torch.log10(((out - answer) ** 2).mean()))}


def check_method(size: str | CheckSize = "full", work_dir: str | Path | None = None, seed: int = 0,
                 config_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the check; returns the before/after measurements and the target domain's LAB means.

    ``config_overrides``: dotted keys applied to the unpaired config (to probe variants)."""


    t0 = time.time()
    sz = SIZES[size] if isinstance(size, str) else size
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="isp-search-check-")
        work_dir = tmp.name
    work = Path(work_dir)
    try:
        root = build_problem(work / "data", sz, seed)
        pre_cfg, un_cfg = configs(root, sz, seed)
        pre = train(pre_cfg, work / "pretrain")
        un_cfg = apply_overrides(un_cfg, {"model.init_from": str(work / "pretrain"),
                                          "train.eval_interval": max(1, sz.unpaired_steps // sz.evals),
                                          **(config_overrides or {})})
        val = make_datasets(un_cfg)["val"]
        items = [val[i] for i in range(len(val))]
        # the known answer ("target"): the val scenes' own ground truth under the look (never seen in training)
        held_out = {"input": torch.stack([it["input"] for it in items]),
                    "reference": torch.stack([it["reference"] for it in items]),
                    "target": torch.stack([it["paired_target"] for it in items])}
        target_lab = lab_means(held_out["target"])
        trajectory: list[dict[str, float]] = []

        def report(step: int, metrics: dict, checkpoint_dir) -> None:
            trajectory.append({"step": step, **measure(Path(checkpoint_dir) / "last.pt", held_out, target_lab)})

        un = train(un_cfg, work / "unpaired", report=report)
        before = measure(work / "pretrain" / "checkpoints" / "last.pt", held_out, target_lab)
        after = measure(work / "unpaired" / "checkpoints" / "last.pt", held_out, target_lab)
        late_pts = [m for m in trajectory if m["step"] > un_cfg.train.steps / 2] or [{"step": -1, **after}]
        late = {k: float(np.median([m[k] for m in late_pts])) for k in ("distance", "psnr_to_answer", "ssim_L")}
        late["steps"] = [m["step"] for m in late_pts]
        mech = probe(work / "unpaired", un_cfg, held_out) if un["status"] == "completed" else None
        res = {"size": asdict(sz), "seed": seed, "target": dict(zip("Lab", map(float, target_lab))),
               "answer_ssim_L": luminance_ssim(held_out["target"], held_out["reference"]),
               "before": before, "after": after, "late": late, "trajectory": trajectory,
               "moved": 1 - late["distance"] / max(before["distance"], 1e-9),
               "val_psnr_to_target": {"before": pre["val"].get("psnr"), "after": un["val"].get("psnr")},
               "status": {"pretrain": pre["status"], "unpaired": un["status"]}, "mechanism": mech,
               "dla": un_cfg.losses.dla}
        res["verdict"] = verdict(res)
        res["passed"] = all(v["ok"] for v in res["verdict"].values())
        res["elapsed_s"] = time.time() - t0
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def verdict(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each criterion of the check: ``{"ok": bool, "detail": str}`` (see the constants above for the bounds)."""

    b, a = res["before"], res["late"]
    out = {
        "trained": {"ok": res["status"] == {"pretrain": "completed", "unpaired": "completed"},
                    "detail": f"pretrain {res['status']['pretrain']}, unpaired {res['status']['unpaired']}"},
        "moved": {"ok": a["distance"] < MOVE_BELOW * b["distance"],
                  "detail": f"LAB distance {b['distance']:.2f} -> late median {a['distance']:.2f} (must be below "
                            f"{MOVE_BELOW:g}x)"},
        "structure": {"ok": a["ssim_L"] >= min(b["ssim_L"], res["answer_ssim_L"]) - SSIM_SLACK,
                      "detail": f"SSIM(L) to the reference {b['ssim_L']:.3f} -> late median {a['ssim_L']:.3f} (the "
                                f"known answer's {res['answer_ssim_L']:.3f}; must stay above the lower of the start's "
                                f"and the answer's less {SSIM_SLACK:g})"},
        "answer": {"ok": a["psnr_to_answer"] > b["psnr_to_answer"],
                   "detail": f"PSNR to the known answer {b['psnr_to_answer']:.2f} -> late median "
                             f"{a['psnr_to_answer']:.2f} dB (must rise)"},
    }
    mech = res.get("mechanism")
    if mech is None:
        return out | {"mechanism": {"ok": False, "detail": "not probed: the unpaired stage did not complete"}}
    ds = mech["discriminators"]
    judged = [t for t in ds if LOSSES.get(t).group == "color"]  # the look is a colour/tone gap: the colour D's job
    out["margin"] = {"ok": bool(judged) and all(ds[t]["margin"] > 0 for t in judged),
                     "detail": "D(real) - D(fake) on held-out images " + ", ".join(
                         f"{t.removeprefix('adv_')} {d['margin']:+.2e}" for t, d in ds.items())
                               + " (the colour discriminator's must be > 0; the texture ones, on grayscale, have no "
                                 "texture gap to find here and are shown only)"}
    err = mech["d_update_error"]
    out["d_update"] = {"ok": all(e < D_UPDATE_TOL for e in err.values()),
                       "detail": "relative error vs docs/method.md §4.7 (R1/R2 on features) " + ", ".join(
                           f"{t.removeprefix('adv_')} {e:.1e}" for t, e in err.items()) + f" (< {D_UPDATE_TOL:g})"}
    sh = mech["dla_share"]
    if res.get("dla", True):
        out["dla"] = {"ok": all(abs(v["share"] - v["expected"]) < DLA_TOL for v in sh.values()),
                      "detail": "share of the update " + ", ".join(
                          f"{t.removeprefix('adv_')} {v['share']:.4f}" for t, v in sh.items())
                                + f" (each ‖g‖/(‖g‖+eps) within {DLA_TOL:g}: docs/method.md §5)"}
    return out


def describe(res: dict[str, Any]) -> str:
    """The check's result for people, a few lines."""
    b, a, t = res["before"], res["after"], res["target"]
    lines = [
        (f"target look on the val scenes, mean LAB: L {t['L']:.1f}, a* {t['a']:.1f}, b* {t['b']:.1f} (their ground "
         f"truth under a fixed colour cast and tone curve; random frozen networks)"),
        *(f"{label} L {m['L']:.1f}, a* {m['a']:.1f}, b* {m['b']:.1f}; distance {m['distance']:.2f}; SSIM(L) to "
          f"reference {m['ssim_L']:.3f}; PSNR to the answer {m['psnr_to_answer']:.2f} dB"
          for label, m in (("before unpaired (pretrained):", b), ("after  unpaired:             ", a))),
        (f"late in the stage (median of steps {', '.join(map(str, res['late']['steps']))}): distance "
         f"{res['late']['distance']:.2f}, PSNR to the answer {res['late']['psnr_to_answer']:.2f} dB: moved "
         f"{100 * res['moved']:.0f}% of the way toward the target look ({res['elapsed_s']:.0f} s in all)"),
    ]
    for name, v in res["verdict"].items():
        lines.append(f"{'ok  ' if v['ok'] else 'FAIL'} {name}: {v['detail']}")
    lines.append("check-method: " + ("passed" if res["passed"] else "FAILED"))
    return "\n".join(lines)
