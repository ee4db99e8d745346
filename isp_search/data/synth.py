"""The embedded synthetic data set: scikit-image's bundled RGB photos unprocessed into RAW (Brooks et al. 2019).

Every sample is a random crop (after a random downscale) of one photo; the crop is the ground-truth RGB and its
unprocessed, mosaicked, noisy, 10-bit (black level 64) version is the RAW. Train, val and test crops come from
disjoint photos. Each sample's randomness is seeded by (seed, split, index), so a set is byte-identical per seed.
Defaults: 64 train / 16 val / 16 test samples of 128 x 128 (seconds to build, enough for a demo run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import skimage.data

from isp_search.data.formats import get_format
from isp_search.data.io import write_raw, write_rgb
from isp_search.errors import UserError
from isp_search.filelock import exclusive_lock
from isp_search.raw import RAW_MAX

# Photos that ship inside the scikit-image wheel (no download). Split by photo so no scene crosses splits.
PHOTOS = {
    "train": ("astronaut", "rocket", "retina", "hubble_deep_field"),
    "val": ("chelsea", "immunohistochemistry"),
    "test": ("coffee", "stereo_motorcycle"),
}
SYNTH_FORMATS = ("mai2022", "zrr")
MARKER = "isp-search-synth.json"
SYNTH_BLACK = 64  # black level of the written RAW files

# Brooks et al. 2019: XYZ -> camera matrices of four cameras, and linear sRGB -> XYZ (D65).
XYZ2CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
    [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
])
RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                    [0.0193339, 0.1191920, 0.9503041]])


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float64 RGB in [0, 1]."""
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle -> (left, right, disparity): the left view only
        img = img[0]
    return np.asarray(img, np.float64)[..., :3] / 255.0


def unprocess(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """sRGB (H, W, 3) in [0, 1] -> noisy linear RGGB mosaic (H, W) in about [0, 1] (Brooks et al. 2019)."""
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
    variance = mosaic * np.exp(log_shot) + np.exp(log_read)
    return mosaic + rng.normal(size=mosaic.shape) * np.sqrt(variance)


def quantize(mosaic: np.ndarray) -> np.ndarray:
    """Linear [0, 1] mosaic -> uint16 10-bit values with black level 64."""
    return np.clip(np.rint(SYNTH_BLACK + mosaic * (RAW_MAX - SYNTH_BLACK)), 0, RAW_MAX).astype(np.uint16)


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = photo.shape[:2]
    s = rng.uniform(max(size / h, size / w, 0.35), 1.0)  # random downscale for variety of scale
    if s < 1.0:
        photo = cv2.resize(photo, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = photo.shape[:2]
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    crop = photo[y : y + size, x : x + size]
    return crop[:, ::-1] if rng.integers(2) else crop


def synthesize(out: str | os.PathLike, fmt: str = "mai2022", n_train: int = 64, n_val: int = 16,
               n_test: int = 16, seed: int = 0, size: int = 128) -> Path:
    """Write a synthetic data set in ``fmt``'s real layout under ``out`` (which must not hold files yet)."""
    if fmt not in SYNTH_FORMATS:
        raise UserError(f"synthetic data can be written as {' or '.join(SYNTH_FORMATS)}, not {fmt!r}")
    if size <= 0 or size % 2:
        raise UserError(f"--size must be a positive even number, got {size}")
    if min(n_train, n_val, n_test) < 0 or n_train == 0:
        raise UserError(f"need n_train > 0 and n_val, n_test >= 0, got {n_train}/{n_val}/{n_test}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder is not empty: {out}")
    layout = get_format(fmt)
    rgb_suffix = ".jpg" if fmt == "zrr" else ".png"
    for split_code, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        if n == 0:
            continue
        raw_dir, rgb_dir = out / split / layout.raw_dir, out / split / layout.rgb_dir
        raw_dir.mkdir(parents=True)
        rgb_dir.mkdir(parents=True)
        photos = [load_photo(p) for p in PHOTOS[split]]
        for i in range(n):
            rng = np.random.default_rng([seed, split_code, i])
            crop = _crop(photos[int(rng.integers(len(photos)))], size, rng)
            write_rgb(rgb_dir / f"{i}{rgb_suffix}", crop)
            # Unprocess the RGB as written (8-bit), so the pair is exactly consistent.
            rgb8 = np.rint(np.clip(crop, 0, 1) * 255) / 255
            write_raw(raw_dir / f"{i}.png", quantize(unprocess(rgb8, rng)))
    params = {"format": fmt, "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed, "size": size}
    (out / MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")
    return out


def ensure_synthetic(root: str | os.PathLike, fmt: str = "mai2022", **kw) -> Path:
    """Build the synthetic set at ``root`` unless one with the same settings is there; safe for concurrent callers.

    ``kw`` are :func:`synthesize`'s ``n_train, n_val, n_test, seed, size``. A folder with other settings or other
    content is a UserError (never overwritten).
    """
    root = Path(root)
    defaults = {"n_train": 64, "n_val": 16, "n_test": 16, "seed": 0, "size": 128}
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError(f"unknown synthetic data option(s): {sorted(unknown)}")
    want = {"format": fmt, **defaults, **kw}

    def ready() -> bool:
        marker = root / MARKER
        if not marker.is_file():
            if root.exists() and any(root.iterdir()):
                raise UserError(f"{root} holds files but no synthetic data set ({MARKER} missing)")
            return False
        have = json.loads(marker.read_text())
        if have != want:
            raise UserError(f"{root} holds a synthetic set built with {have}, asked {want}; use another folder")
        return True

    if ready():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root.parent / f".{root.name}.lock"):
        if ready():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            synthesize(tmp, fmt, **{k: v for k, v in want.items() if k != "format"})
            if root.exists():
                root.rmdir()  # empty (checked by ready())
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
