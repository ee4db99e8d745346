"""Keeping work off nodes that failed the node check (:mod:`isp_search.search.nodes`, ``--skip-bad-nodes``).

Ray gives every node the label ``ray.io/node-id``; a label selector ``!in(id, ...)`` matches every node but those.
Trials take it through their placement group's bundle, tasks (pretrain, confirmation, baselines) as an option.
The trials' resources function (:func:`trial_resources`) also keeps them off the nodes quarantined during the search
(:mod:`isp_search.search.quarantine`). It lives here because Ray unpickles it in every trial worker: this module
imports only Ray, where the quarantine's imports reach torch (about 0.5 GiB more a worker).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ray import tune
from ray.util.placement_group import NODE_ID_LABEL_KEY

# Study name -> nodes no new trial may use (node check and quarantine), in the process that creates the trials.
# The resources function below is pickled into Ray's registry, so it finds this set by name instead of carrying it.
_KEPT_OFF: dict[str, set[str]] = {}


def node_selector(excluded: Sequence[str]) -> dict[str, str]:
    """A label selector matching every node but ``excluded``."""
    return {NODE_ID_LABEL_KEY: f"!in({','.join(excluded)})"}


def avoiding(excluded: Sequence[str]) -> dict[str, Any]:
    """Ray task options that keep a task off ``excluded`` nodes (none excluded: no option)."""
    return {"label_selector": node_selector(excluded)} if excluded else {}


def kept_off(study: str) -> set[str]:
    """The nodes no new trial of ``study`` may use (the live set, shared by the callback and the resources)."""
    return _KEPT_OFF.setdefault(study, set())


def trial_resources(bundle: dict[str, float], study: str, checked_out: Sequence[str] = ()
                    ) -> Callable[[dict], tune.PlacementGroupFactory]:
    """A trial's resources as ``tune.with_resources`` takes them: a function Ray calls on the driver as it creates
    each trial, giving ``bundle`` on any node but those the node check left out (``checked_out``) and those
    quarantined so far."""
    return functools.partial(_resources, bundle=dict(bundle), study=study, checked_out=tuple(checked_out))


def _resources(config: dict, *, bundle: dict[str, float], study: str, checked_out: tuple[str, ...]
               ) -> tune.PlacementGroupFactory:
    excluded = kept_off(study)
    excluded.update(checked_out)  # so the quarantine counts them too when it looks for the last node left
    if not excluded:
        return tune.PlacementGroupFactory([bundle])
    return tune.PlacementGroupFactory([bundle], bundle_label_selector=[node_selector(sorted(excluded))])
