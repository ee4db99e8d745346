"""Seeded, recorded train/val/test carving with an optional exclude list.

A split folder that exists with paired RGB is used as it is ("native"). Otherwise val/test are carved out of train
(the paper: 1,024 ZRR train images held out as val; MAI 2022 minus misaligned pairs, then 1,024 val + 1,024 test).
The exclude list removes train ids before carving. The result is a JSON record of every id used, so a run can say
exactly which images it saw and a later run can reuse it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from isp_search.data.formats import SplitListing, file_id, get_format
from isp_search.errors import UserError

PAPER_CARVE = 1024


@dataclass(frozen=True)
class SplitPart:
    """Which folder a split's samples come from, and their ids in that folder."""

    source: str
    ids: tuple[int | str, ...]


@dataclass(frozen=True)
class Splits:
    """The record of a carving: format, seed, exclude list and the ids of each split."""

    format: str
    seed: int
    parts: dict[str, SplitPart]
    excluded: tuple[int | str, ...] = ()
    request: dict = field(default_factory=dict)

    def listing(self, root: str | Path, split: str) -> SplitListing:
        """The samples of ``split`` under ``root`` as recorded."""
        if split not in self.parts:
            raise UserError(f"no {split!r} split in this data set (have: {', '.join(self.parts)})")
        part = self.parts[split]
        return get_format(self.format).list_split(root, part.source).select(part.ids)

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "seed": self.seed,
            "excluded": list(self.excluded),
            "request": self.request,
            "splits": {k: {"source": v.source, "ids": list(v.ids)} for k, v in self.parts.items()},
        }

    def save(self, path: str | Path) -> None:
        """Write the record atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "Splits":
        try:
            d = json.loads(Path(path).read_text())
            parts = {k: SplitPart(v["source"], tuple(v["ids"])) for k, v in d["splits"].items()}
            return cls(d["format"], int(d["seed"]), parts, tuple(d.get("excluded", ())), d.get("request", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot read split record {path}: {e}") from None


def read_exclude(exclude: str | Path | list | tuple | None) -> list[int | str]:
    """Ids to drop: a list, or a file with a JSON list or one id per line (``#`` starts a comment)."""
    if exclude is None:
        return []
    if isinstance(exclude, (list, tuple)):
        return [file_id(str(x)) for x in exclude]
    path = Path(exclude)
    if not path.is_file():
        raise UserError(f"exclude list not found: {path}")
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            return [file_id(str(x)) for x in json.loads(text)]
        except ValueError as e:
            raise UserError(f"exclude list {path} is not a JSON list: {e}") from None
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [file_id(ln) for ln in lines if ln]


def load_splits(record: str | Path, root: str | Path, fmt: str) -> Splits:
    """A recorded carving, checked against ``fmt`` and the files under ``root``."""
    rec = Splits.load(record)
    if rec.format != fmt:
        raise UserError(f"split record {record} is for format {rec.format!r}, not {fmt!r}")
    for split in rec.parts:
        rec.listing(root, split)  # every recorded id must still exist
    return rec


def _default_n(n_train: int) -> int:
    # The paper's 1,024, or an eighth of train for small (e.g. synthetic) sets.
    return max(1, min(PAPER_CARVE, n_train // 8))


def carve_splits(
    root: str | Path,
    fmt: str,
    seed: int = 0,
    n_val: int | None = None,
    n_test: int | None = None,
    exclude: str | Path | list | tuple | None = None,
    record: str | Path | None = None,
) -> Splits:
    """Carve (or reuse) train/val/test ids; with ``record`` the result is written there, or read if it exists.

    ``n_val``/``n_test`` only apply to splits carved from a paired train split (default: 1,024 or train/8, whichever is less;
    0 = none). A record made with other settings is a UserError rather than silently reused.
    """
    data_format = get_format(fmt)
    request = {"seed": seed, "n_val": n_val, "n_test": n_test, "exclude": [str(x) for x in read_exclude(exclude)]}
    if record is not None and Path(record).is_file():
        rec = Splits.load(record)
        if rec.format != fmt or rec.request != request:
            raise UserError(
                f"split record {record} was made with format={rec.format} {rec.request}, asked format={fmt} "
                f"{request}; delete it or ask for the same carving"
            )
        return load_splits(record, root, fmt)

    train = data_format.list_split(root, "train")
    drop = set(read_exclude(exclude))
    kept = [s.id for s in train.samples if s.id not in drop]
    excluded = tuple(s.id for s in train.samples if s.id in drop)
    parts: dict[str, SplitPart] = {}
    to_carve: list[tuple[str, int]] = []
    for split, n in (("val", n_val), ("test", n_test)):
        if data_format.has_split(root, split) and data_format.list_split(root, split).paired:
            parts[split] = SplitPart(split, tuple(s.id for s in data_format.list_split(root, split).samples))
        elif n != 0 and train.paired:  # an unpaired train split (folder) gives no evaluation pairs to carve
            to_carve.append((split, _default_n(len(kept)) if n is None else int(n)))
    total = sum(n for _, n in to_carve)
    if total >= len(kept):
        raise UserError(f"cannot carve {total} val/test images out of {len(kept)} train images in {root}")
    order = np.random.default_rng(seed).permutation(len(kept))
    start = 0
    for split, n in to_carve:
        parts[split] = SplitPart("train", tuple(kept[i] for i in sorted(order[start:start + n])))
        start += n
    carved = {i for _, p in parts.items() if p.source == "train" for i in p.ids}
    parts = {"train": SplitPart("train", tuple(i for i in kept if i not in carved)), **parts}
    parts = {k: parts[k] for k in ("train", "val", "test") if k in parts}
    splits = Splits(fmt, seed, parts, excluded, request)
    if record is not None:
        splits.save(record)
    return splits
