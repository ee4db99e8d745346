"""``data check``: read every file of a data set and summarise it; the first bad file is a UserError naming it."""

from __future__ import annotations

from pathlib import Path

from isp_search.data.formats import SPLITS, get_format
from isp_search.data.io import read_raw, read_rgb
from isp_search.errors import UserError


def _rgb_bits(path: Path) -> int:
    """Bit depth from the file header (PNG IHDR byte 24; JPEG is always 8 here)."""
    if path.suffix.lower() == ".png":
        with open(path, "rb") as fh:
            head = fh.read(25)
        return head[24] if len(head) == 25 else 0
    return 8


def _sizes(shapes: set[tuple[int, int]]) -> list[str]:
    return sorted(f"{h}x{w}" for h, w in shapes)


def check_dataset(root: str | Path, fmt: str) -> dict:
    """Counts, sizes, bit depths, RAW value range and pairing per split (every file is decoded)."""
    data_format = get_format(fmt)
    root = Path(root)
    report: dict = {"root": str(root), "format": fmt, "splits": {}}
    for split in SPLITS:
        if not data_format.has_split(root, split):
            continue
        listing = data_format.list_split(root, split)  # raises on a missing counterpart
        lo, hi, raw_shapes, rgb_shapes, rgb_bits, mismatched = None, None, set(), set(), set(), 0
        for s in listing.samples:
            raw = read_raw(s.raw_path)  # raises on corrupt / wrong bit depth / > 10-bit values
            raw_shapes.add(raw.shape)
            lo = int(raw.min()) if lo is None else min(lo, int(raw.min()))
            hi = int(raw.max()) if hi is None else max(hi, int(raw.max()))
            if s.rgb_path is not None:
                shape = read_rgb(s.rgb_path).shape[:2]
                rgb_shapes.add(shape)
                rgb_bits.add(_rgb_bits(s.rgb_path))
                mismatched += int(shape != raw.shape)
        if not listing.paired:  # unpaired photos (folder train)
            for p in listing.rgb_pool:
                rgb_shapes.add(read_rgb(p).shape[:2])
                rgb_bits.add(_rgb_bits(p))
        pairing = "paired" if listing.paired else ("unpaired" if listing.rgb_pool else "raw-only")
        report["splits"][split] = {
            "raw": len(listing.samples),
            "rgb": len(listing.rgb_pool),
            "pairing": pairing,
            "raw_sizes": _sizes(raw_shapes),
            "rgb_sizes": _sizes(rgb_shapes),
            "raw_bits": 16,
            "rgb_bits": sorted(rgb_bits),
            "raw_min": lo,
            "raw_max": hi,
            "size_mismatches": mismatched,
        }
    if not report["splits"]:
        raise UserError(f"no {fmt} split folders under {root} (expected e.g. {root}/train/{data_format.raw_dir})")
    return report


def format_report(report: dict) -> str:
    """The report as a few aligned lines."""
    lines = [f"{report['format']} data set at {report['root']}"]
    for split, r in report["splits"].items():
        lines.append(
            f"  {split:5s}  {r['raw']:6d} RAW {r['rgb']:6d} RGB  {r['pairing']:8s}  RAW {','.join(r['raw_sizes'])} "
            f"16-bit values {r['raw_min']}..{r['raw_max']}  RGB {','.join(r['rgb_sizes']) or '-'} "
            f"{'/'.join(str(b) for b in r['rgb_bits']) or '-'}-bit"
            + (f"  {r['size_mismatches']} RAW/RGB size mismatches" if r["size_mismatches"] else "")
        )
    return "\n".join(lines)

