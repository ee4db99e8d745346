"""The training method (docs/method.md §4–6): losses, discriminators, Dynamic Loss Adaptation and ``train()``.

Public API: :func:`train`, :func:`load_train_config`, :func:`apply_overrides`, :func:`train_config_from_dict`,
:class:`TrainConfig`. Names are imported lazily so reading a config does not import the networks.
"""

from __future__ import annotations

from isp_search.lazy import lazy_exports

_EXPORTS = {
    "train": "loop", "TrainConfig": "config", "load_train_config": "config", "apply_overrides": "config",
    "train_config_from_dict": "config", "MODES": "config", "MODE_TERMS": "config", "LOSSES": "losses",
    "DISCRIMINATORS": "discriminators",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
