"""Keeping new trials off a node that fails them at once, found during the search.

The node check (:mod:`isp_search.search.nodes`) looks before the search for the problems it knows. A node can still
fail every trial it is given for a reason it cannot see (a mount or a library it did not test). The trial wrapper
reports each error with the node it ran on (:mod:`isp_search.search.guard`); :class:`NodeQuarantine`, a Ray Tune
callback on the driver, counts per node the deterministic errors of trials that failed before their first
evaluation, by their reason with the trial's own id and folders taken out. At the second identical one that node
is quarantined: one line names it, the reason and that no new trials go there, and every trial created from then on
carries a label selector keeping it off that node and the nodes the node check left out (:func:`trial_resources`).
Trials already placed keep their node.

The last node that can hold a trial is never quarantined (the trials would wait forever): its trials go on failing
as they would without the quarantine, and one line says so. The quarantine lasts while the driver runs: a
``--resume`` starts with none, and finds such a node again after two failures.
"""

from __future__ import annotations

import re
from typing import Any

from ray.tune import Callback

from isp_search.search.guard import DETERMINISTIC_KEY, NODE_KEY
from isp_search.search.nodes import trial_nodes
from isp_search.search.placement import kept_off, trial_resources
from isp_search.search.space import SearchSpace

__all__ = ["REPEATS", "NodeQuarantine", "kept_off", "same_reason", "trial_resources"]

REPEATS = 2  # identical failures at once on one node before it is quarantined
_TRIAL_DIR = re.compile(r"trial_[0-9a-f]{5,8}(?:_\d{5})?")


def same_reason(reason: str, trial_id: str) -> str:
    """``reason`` with what differs between trials failing for one cause taken out: trial ids and trial folders."""
    if trial_id:
        reason = reason.replace(trial_id, "<trial>")
    return _TRIAL_DIR.sub("trial_<id>", reason)


class NodeQuarantine(Callback):
    """Ray callback: a node where two trials fail at once with the same deterministic error gets no new trials."""

    def __init__(self, space: SearchSpace, study: str) -> None:
        self.space, self.study = space, study
        self._failures: dict[tuple[str, str], int] = {}  # (node id, reason) -> trials failed at once
        self._kept: set[str] = set()  # nodes already said to be the last one left

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        node = result.get(NODE_KEY)
        # Ray's iterations_since_restore is 1 when the error report is this attempt's first result
        if (not node or result.get("trial_status") != "error" or not result.get(DETERMINISTIC_KEY)
                or result.get("iterations_since_restore") != 1):
            return
        reason = str(result.get("fail_reason") or "")
        key = (node, same_reason(reason, trial.trial_id))
        self._failures[key] = self._failures.get(key, 0) + 1
        excluded = kept_off(self.study)
        if self._failures[key] < REPEATS or node in excluded:
            return
        alive = {n["NodeID"]: n for n in trial_nodes(self.space)}
        where = f"node {alive.get(node, {}).get('NodeManagerAddress') or result.get('node_ip', '?')} ({node[:8]})"
        if not set(alive) - excluded - {node}:
            if node not in self._kept:
                self._kept.add(node)
                print(f"nodes: {where}: {self._failures[key]} trials failed there before their first evaluation "
                      f"with {reason}, but it is the last node that can run a trial: it stays in use, and the "
                      "trials sent there go on failing", flush=True)
            return
        excluded.add(node)
        print(f"nodes: quarantined {where}: {self._failures[key]} trials failed there before their first evaluation "
              f"with {reason}; no new trials go there", flush=True)
