"""Keeping work off nodes that failed the node check (:mod:`isp_search.search.nodes`, ``--skip-bad-nodes``).

Ray gives every node the label ``ray.io/node-id``; a label selector ``!in(id, ...)`` matches every node but those.
Trials take it through their placement group's bundle, tasks (pretrain, confirmation, baselines) as an option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.util.placement_group import NODE_ID_LABEL_KEY


def node_selector(excluded: Sequence[str]) -> dict[str, str]:
    """A label selector matching every node but ``excluded``."""
    return {NODE_ID_LABEL_KEY: f"!in({','.join(excluded)})"}


def avoiding(excluded: Sequence[str]) -> dict[str, Any]:
    """Ray task options that keep a task off ``excluded`` nodes (none excluded: no option)."""
    return {"label_selector": node_selector(excluded)} if excluded else {}
