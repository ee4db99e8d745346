"""RAW/RGB data: file I/O, data-set formats, pairing, augmentation, synthetic data and the torch Dataset.

The names below are imported lazily so that ``isp_search.data.io`` (say) does not pull in torch.
"""

from __future__ import annotations

from isp_search.lazy import lazy_exports

_EXPORTS = {
    "read_raw": "io", "read_rgb": "io", "write_raw": "io", "write_rgb": "io",
    "FORMATS": "formats", "SampleRef": "formats", "SplitListing": "formats", "get_format": "formats",
    "Splits": "splits", "carve_splits": "splits", "load_splits": "splits",
    "PAIRINGS": "pairing", "make_pairing": "pairing",
    "augment_sample": "augment", "random_op": "augment",
    "DEMOSAICERS": "demosaic", "ReferenceLook": "demosaic", "demosaic": "demosaic", "demosaic_reference": "demosaic",
    "ReferenceStore": "cache", "reference_store": "cache", "default_cache_dir": "cache",
    "RawRGBDataset": "dataset",
    "synthesize": "synth", "ensure_synthetic": "synth",
    "check_dataset": "check",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
