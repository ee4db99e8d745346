"""The embedded synthetic data set: bundled natural photos and dead-leaves scenes, unprocessed into RAW.

Sources (no download): the natural colour photos of :mod:`isp_search.data.photos`, split by photo (train, val and
test never share a photo), and, for a fraction ``dead_leaves`` of each split, dead-leaves scenes
(:mod:`isp_search.data.dead_leaves`) coloured from the *training* photos' pixels, so a set of any size keeps
natural statistics. A photo sample is a random crop after a random downscale (0.35-1x); a photo smaller than
``size`` is upscaled by the least factor that fits (bicubic; at ``size`` 448: at most 1.5x, chelsea).

The RAW is made from the 8-bit RGB as written by the unprocessing of Brooks et al. 2019 (docs/method.md §2.1),
so each pair is exactly consistent:
- **CFA**: RGGB, written as 16-bit PNG holding 10-bit values.
- **Black level 64, white level 1023**: value = 64 + x · (1023 − 64) for linear x in [0, 1], rounded, clipped to
  [0, 1023] (read noise takes dark pixels a little below 64; highlights clip at 1023).
- **Colour response**: random per sample. Linear sRGB goes to camera RGB through a random convex mix of four
  cameras' XYZ→camera matrices times sRGB→XYZ (rows normalised, so neutral stays neutral), then white balance is
  undone: R divided by U(1.9, 2.4), B by U(1.5, 1.9), all by 1/N(0.8, 0.1) (highlights kept). A grey patch's RAW
  thus reads R/G ≈ 0.47, B/G ≈ 0.59 on average. Before that: inverse smoothstep tone curve and gamma 2.2.
- **Noise**: Gaussian, variance = x · shot + read, log shot ~ U(log 1e-4, log 0.012), log read = 2.18 · log shot +
  1.20 + N(0, 0.26).

Each sample's randomness is seeded by (seed, split, index): a set is byte-identical per seed and settings.
``isp-search-synth-samples.json`` lists each sample's source and unprocessing parameters. Defaults: 64 train /
16 val / 16 test samples of 128 x 128, a quarter dead leaves (seconds to build, enough for a demo run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from isp_search.data.dead_leaves import dead_leaves as draw_dead_leaves
from isp_search.data.formats import get_format
from isp_search.data.io import read_rgb, write_raw, write_rgb
from isp_search.data.photos import PHOTO_SPLITS, load_photo
from isp_search.errors import UserError
from isp_search.filelock import exclusive_lock
from isp_search.raw import RAW_MAX

SPLITS = ("train", "val", "test")
SYNTH_FORMATS = ("mai2022", "zrr")
MARKER = "isp-search-synth.json"
SAMPLES = "isp-search-synth-samples.json"
GENERATOR = 2  # 2: balanced natural photos + dead leaves (1: scikit-image photos incl. hubble/retina)
SYNTH_BLACK = 64  # black level of the written RAW files
SYNTH_WHITE = RAW_MAX  # white (saturation) level: 1023
DEAD_LEAVES = 0.25  # default fraction of dead-leaves samples per split
DEFAULTS = {"n_train": 64, "n_val": 16, "n_test": 16, "seed": 0, "size": 128, "dead_leaves": DEAD_LEAVES}

# Brooks et al. 2019: XYZ -> camera matrices of four cameras, and linear sRGB -> XYZ (D65).
XYZ2CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
])
RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                    [0.0193339, 0.1191920, 0.9503041]])


def unprocess(rgb: np.ndarray, rng: np.random.Generator, meta: dict | None = None) -> np.ndarray:
    """sRGB (H, W, 3) in [0, 1] -> noisy linear RGGB mosaic (H, W) in about [0, 1] (Brooks et al. 2019).

    ``meta``, when given, receives the drawn parameters (rgb2cam, gains, noise levels)."""
    w = rng.uniform(1e-8, 1e8, size=4)
    xyz2cam = np.tensordot(w / w.sum(), XYZ2CAMS, axes=1)
    rgb2cam = xyz2cam @ RGB2XYZ
    rgb2cam /= rgb2cam.sum(axis=1, keepdims=True)
    rgb_gain = 1.0 / rng.normal(0.8, 0.1)
    red_gain, blue_gain = rng.uniform(1.9, 2.4), rng.uniform(1.5, 1.9)

    x = np.clip(rgb, 0.0, 1.0)
    x = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * x) / 3.0)  # inverse smoothstep tone curve
    x = np.maximum(x, 1e-8) ** 2.2  # inverse gamma
    x = x @ rgb2cam.T  # inverse CCM: linear RGB -> camera space
    gains = np.array([1.0 / red_gain, 1.0, 1.0 / blue_gain]) / rgb_gain
    gray = x.mean(axis=-1, keepdims=True)  # highlight-preserving inverse white balance
    mask = (np.maximum(gray - 0.9, 0.0) / 0.1) ** 2
    x = x * np.maximum(mask + (1.0 - mask) * gains, gains)
    x = np.clip(x, 0.0, 1.0)
    mosaic = np.empty(x.shape[:2])
    mosaic[0::2, 0::2] = x[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = x[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = x[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = x[1::2, 1::2, 2]
    log_shot = rng.uniform(np.log(1e-4), np.log(0.012))
    log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
    if meta is not None:
        meta.update(rgb2cam=np.round(rgb2cam, 5).tolist(), red_gain=round(float(red_gain), 5),
                    blue_gain=round(float(blue_gain), 5), rgb_gain=round(float(rgb_gain), 5),
                    shot_noise=float(f"{np.exp(log_shot):.5g}"), read_noise=float(f"{np.exp(log_read):.5g}"))
    variance = mosaic * np.exp(log_shot) + np.exp(log_read)
    return mosaic + rng.normal(size=mosaic.shape) * np.sqrt(variance)


def quantize(mosaic: np.ndarray) -> np.ndarray:
    """Linear [0, 1] mosaic -> uint16 10-bit values with black level 64 and white level 1023."""
    span = SYNTH_WHITE - SYNTH_BLACK
    return np.clip(np.rint(SYNTH_BLACK + mosaic * span), 0, SYNTH_WHITE).astype(np.uint16)


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A random ``size``² crop after a random rescale (upscaled by the least factor when the photo is smaller)."""

    h, w = photo.shape[:2]
    fit = max(size / h, size / w)  # > 1: the photo is smaller than the crop
    s = float(rng.uniform(max(fit, 0.35), max(fit, 1.0)))  # random downscale for variety of scale
    if s != 1.0:
        interp = cv2.INTER_AREA if s < 1.0 else cv2.INTER_CUBIC
        photo = np.clip(cv2.resize(photo, (max(size, round(w * s)), max(size, round(h * s))),
                                   interpolation=interp), 0.0, 1.0)
    h, w = photo.shape[:2]
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    crop = photo[y : y + size, x : x + size]
    return (crop[:, ::-1] if rng.integers(2) else crop), s


def training_palette(step: int = 7) -> np.ndarray:
    """The dead leaves' colours: every ``step``-th pixel of each training photo, equally many per photo."""
    pixels = [load_photo(n).reshape(-1, 3)[::step] for n in PHOTO_SPLITS["train"]]
    n = min(len(p) for p in pixels)
    return np.concatenate([p[:n] for p in pixels])


def is_dead_leaves(i: int, fraction: float) -> bool:
    """Whether sample ``i`` is a dead-leaves scene: evenly spread, round(n · fraction) of the first n."""
    return int(np.floor((i + 1) * fraction + 0.5)) > int(np.floor(i * fraction + 0.5))


def synthesize(out: str | os.PathLike, fmt: str = "mai2022", n_train: int = 64, n_val: int = 16,
               n_test: int = 16, seed: int = 0, size: int = 128, dead_leaves: float = DEAD_LEAVES) -> Path:
    """Write a synthetic data set in ``fmt``'s real layout under ``out`` (which must not hold files yet)."""
    if fmt not in SYNTH_FORMATS:
        raise UserError(f"synthetic data can be written as {' or '.join(SYNTH_FORMATS)}, not {fmt!r}")
    if size <= 0 or size % 2:
        raise UserError(f"--size must be a positive even number, got {size}")
    if min(n_train, n_val, n_test) < 0 or n_train == 0:
        raise UserError(f"need n_train > 0 and n_val, n_test >= 0, got {n_train}/{n_val}/{n_test}")
    if not 0.0 <= dead_leaves <= 1.0:
        raise UserError(f"--dead-leaves must be a fraction in [0, 1], got {dead_leaves}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder is not empty: {out}")
    layout = get_format(fmt)
    rgb_suffix = ".jpg" if fmt == "zrr" else ".png"
    palette = training_palette() if dead_leaves > 0 else None
    samples: dict[str, list[dict]] = {}
    for split_code, (split, n) in enumerate(zip(SPLITS, (n_train, n_val, n_test))):
        if n == 0:
            continue
        raw_dir, rgb_dir = out / split / layout.raw_dir, out / split / layout.rgb_dir
        raw_dir.mkdir(parents=True)
        rgb_dir.mkdir(parents=True)
        photos = PHOTO_SPLITS[split]
        samples[split] = []
        n_photo = 0  # photos taken in turn, so each is used equally often
        for i in range(n):
            rng = np.random.default_rng([seed, split_code, i])
            if palette is not None and is_dead_leaves(i, dead_leaves):
                rgb, info = draw_dead_leaves(size, palette, rng), {"source": "dead_leaves"}
            else:
                name = photos[n_photo % len(photos)]
                n_photo += 1
                rgb, scale = _crop(load_photo(name), size, rng)
                info = {"source": name, "scale": round(scale, 4)}
            write_rgb(rgb_dir / f"{i}{rgb_suffix}", rgb)
            # Unprocess the RGB as written (8-bit), so the pair is exactly consistent.
            rgb8 = np.rint(np.clip(rgb, 0, 1) * 255) / 255
            write_raw(raw_dir / f"{i}.png", quantize(unprocess(rgb8, rng, info)))
            samples[split].append(info)
    params = {"format": fmt, "generator": GENERATOR, "n_train": n_train, "n_val": n_val, "n_test": n_test,
              "seed": seed, "size": size, "dead_leaves": dead_leaves}
    raw_levels = {"cfa": "RGGB", "black_level": SYNTH_BLACK, "white_level": SYNTH_WHITE}
    (out / SAMPLES).write_text(json.dumps({"raw": raw_levels, "samples": samples}, sort_keys=True) + "\n")
    (out / MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")
    return out


def split_stats(root: str | os.PathLike, fmt: str = "mai2022") -> dict[str, dict[str, float]]:
    """Per split, from the written RGB files: sample count, mean brightness (mean of R, G, B), mean R, G, B,
    the fraction of pixels darker than 0.1 or brighter than 0.9 (by brightness) and of dead-leaves samples."""
    root, layout = Path(root), get_format(fmt)
    manifest = json.loads((root / SAMPLES).read_text())["samples"] if (root / SAMPLES).is_file() else {}
    stats = {}
    for split in SPLITS:
        folder = root / split / layout.rgb_dir
        if not folder.is_dir():
            continue
        imgs = [read_rgb(p) for p in sorted(folder.iterdir())]
        rgb = np.mean([im.reshape(-1, 3).mean(0) for im in imgs], axis=0)
        bright = [im.mean(-1) for im in imgs]
        leaves = [s["source"] == "dead_leaves" for s in manifest.get(split, [])]
        stats[split] = {"n": len(imgs), "mean": float(rgb.mean()), "r": float(rgb[0]), "g": float(rgb[1]),
                        "b": float(rgb[2]), "dark": float(np.mean([(b < 0.1).mean() for b in bright])),
                        "bright": float(np.mean([(b > 0.9).mean() for b in bright])),
                        "dead_leaves": float(np.mean(leaves)) if leaves else 0.0}
    return stats


def format_stats(stats: dict[str, dict[str, float]]) -> str:
    """The split statistics as an aligned table for the terminal."""
    lines = ["split  n     mean   R      G      B      <0.1   >0.9   dead leaves"]
    for split, s in stats.items():
        lines.append(f"{split:<6} {s['n']:<5d} {s['mean']:.3f}  {s['r']:.3f}  {s['g']:.3f}  {s['b']:.3f}  "
                     f"{s['dark']:.3f}  {s['bright']:.3f}  {s['dead_leaves']:.2f}")
    return "\n".join(lines)


def ensure_synthetic(root: str | os.PathLike, fmt: str = "mai2022", **kw) -> Path:
    """Build the synthetic set at ``root`` unless one with the same settings is there; safe for concurrent callers.

    ``kw`` are :func:`synthesize`'s ``n_train, n_val, n_test, seed, size, dead_leaves``. A set written by an older
    generator (its marker says so) is rebuilt in place; a folder with other settings or other content is a
    UserError (never overwritten).
    """
    root = Path(root)
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown synthetic data option(s): {sorted(unknown)}")
    want = {"format": fmt, "generator": GENERATOR, **DEFAULTS, **kw}

    def state() -> str:
        marker = root / MARKER
        if not marker.is_file():
            if root.exists() and any(root.iterdir()):
                raise UserError(f"{root} holds files but no synthetic data set ({MARKER} missing)")
            return "missing"
        have = json.loads(marker.read_text())
        if have.get("generator", 1) < GENERATOR:
            return "stale"
        if have != want:
            raise UserError(f"{root} holds a synthetic set built with {have}, asked {want}; use another folder")
        return "ready"

    if state() == "ready":
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root.parent / f".{root.name}.lock"):
        now = state()
        if now == "ready":
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        try:
            synthesize(tmp, fmt, **{k: v for k, v in want.items() if k not in ("format", "generator")})
            if now == "stale":  # ours, from an older generator: moved aside, then deleted
                os.rename(root, old)
            elif root.exists():
                root.rmdir()  # empty (checked by state())
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    return root
