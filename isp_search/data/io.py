"""Reading and writing RAW mosaics (16-bit PNG holding 10-bit values, or DNG) and RGB images, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import rawpy

from isp_search.errors import UserError
from isp_search.raw import RAW_MAX

RAW_SUFFIXES = (".png", ".dng")
RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
RGB_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}  # full scale of each decoded bit depth


class DataError(UserError):
    """A missing, corrupt or wrongly formatted data file."""


def _imread(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: corrupt or unreadable image")
    return img


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """A Bayer mosaic as uint16 (H, W) holding 10-bit values, RGGB, even sides.

    PNG: single-channel 16-bit. DNG: read with rawpy, black/white levels mapped to the 10-bit range with black 64
    and the mosaic re-aligned to RGGB by cropping one row/column where needed.
    """
    p = Path(path)
    if p.suffix.lower() == ".dng":
        raw = _read_dng(p)
    else:
        raw = _imread(p)
        if raw.ndim != 2:
            raise DataError(f"{p}: RAW PNG must be single-channel, got {raw.shape[2]} channels")
        if raw.dtype != np.uint16:
            raise DataError(f"{p}: RAW PNG must be 16-bit (holding 10-bit values), got {raw.dtype.itemsize * 8}-bit")
    h, w = raw.shape
    if h % 2 or w % 2:
        raise DataError(f"{p}: RAW sides must be even, got {h}x{w}")
    if raw.max(initial=0) > RAW_MAX:
        raise DataError(f"{p}: RAW values must be 10-bit (0..{RAW_MAX}), found {int(raw.max())}")
    return raw


def _read_dng(p: Path) -> np.ndarray:
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with rawpy.imread(str(p)) as r:
            mosaic = r.raw_image_visible.astype(np.float32)
            pattern = r.raw_pattern
            colors = r.color_desc.decode()
            black = float(np.mean(r.black_level_per_channel))
            white = float(r.white_level)
    except Exception as e:  # rawpy raises LibRawError subclasses
        raise DataError(f"{p}: unreadable DNG ({type(e).__name__})") from None
    if pattern is None or pattern.shape != (2, 2):
        raise DataError(f"{p}: not a Bayer DNG (no 2x2 CFA pattern)")
    names = [[colors[pattern[y, x]] for x in range(2)] for y in range(2)]
    (ry, rx), = [(y, x) for y in range(2) for x in range(2) if names[y][x] == "R"]
    mosaic = mosaic[ry:, rx:]
    h, w = mosaic.shape
    mosaic = mosaic[: h - h % 2, : w - w % 2]
    scaled = (mosaic - black) / max(white - black, 1.0) * (RAW_MAX - 64) + 64
    return np.clip(np.rint(scaled), 0, RAW_MAX).astype(np.uint16)


def write_raw(path: str | os.PathLike, raw: np.ndarray) -> None:
    """Write a uint16 mosaic as a 16-bit single-channel PNG."""
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"expected uint16 (H, W), got {raw.dtype} {raw.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), raw):
        raise OSError(f"{path}: could not write")


def decode_rgb(path: str | os.PathLike) -> np.ndarray:
    """An RGB image as decoded, in RGB order: uint8 or uint16 (H, W, 3), contiguous (what a pack stores)."""
    p = Path(path)
    img = _imread(p)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.shape[2] != 3:
        raise DataError(f"{p}: expected an RGB image, got {img.shape[2]} channels")
    if img.dtype not in RGB_SCALES:
        raise DataError(f"{p}: expected an 8- or 16-bit RGB image, got {img.dtype}")
    return np.ascontiguousarray(img[..., ::-1])


def rgb_to_float(img: np.ndarray) -> np.ndarray:
    """A decoded uint8/uint16 RGB image -> float32 in [0, 1] (one pass; the same bits from a file or a pack)."""
    return np.divide(img, np.float32(RGB_SCALES[img.dtype]), dtype=np.float32)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An RGB image as float32 (H, W, 3) in [0, 1] (8- or 16-bit files)."""
    return rgb_to_float(decode_rgb(path))


def write_rgb(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write float RGB in [0, 1] (H, W, 3) as 8-bit PNG or JPEG (by suffix)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img = np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)[..., ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if Path(path).suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), np.ascontiguousarray(img), params):
        raise OSError(f"{path}: could not write")
