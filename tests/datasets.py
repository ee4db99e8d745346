"""``dataset(root, fmt, split, arch, **options)``: a RawRGBDataset from flat keyword options, each sorted into the
option object it belongs to (:class:`Carving`, :class:`Caching`, :class:`ItemOptions`), so tests stay short."""

from __future__ import annotations

import dataclasses
from typing import Any

from isp_search.data.dataset import Caching, Carving, ItemOptions, RawRGBDataset

_RENAMED = {"carve_seed": (Carving, "seed"), "splits": (Carving, "splits"), "seed": (ItemOptions, "seed")}


def dataset(root: Any, fmt: str, split: str, arch: Any, preset: str | None = None, **options: Any) -> RawRGBDataset:
    parts: dict[type, dict[str, Any]] = {Carving: {}, Caching: {}, ItemOptions: {}}
    for key, value in options.items():
        cls, name = _RENAMED.get(key, (None, key))
        if cls is None:
            cls = next((c for c in parts if name in {f.name for f in dataclasses.fields(c)}), None)
        if cls is None:
            raise TypeError(f"no dataset option {key!r}")
        parts[cls][name] = value
    return RawRGBDataset(root, fmt, split, arch, preset, Carving(**parts[Carving]), Caching(**parts[Caching]),
                         ItemOptions(**parts[ItemOptions]))
