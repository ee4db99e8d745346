"""Every node that can take a trial, checked on that node before it takes one.

Preflight runs on the driver, which sees its own disks. A node without the data mount, with ``$ISP_SEARCH_CACHE``
pointing elsewhere, or unable to write the storage would fail every trial sent to it while the search kept feeding
it. So after the prepare stage (whose caches must be visible everywhere) one small task per alive node whose
resources can hold a trial runs there (node affinity) and checks what a trial will read and write: the storage
path is writable, the data roots and their splits exist, the pretrained weight files exist, and the prepare
stage's reference stores are in that node's cache folder.

A failing node is one line naming it and its problems; the study then stops (exit 2), or with
``--skip-bad-nodes`` goes on without those nodes: trials, the pretrain run and every other task carry a label
selector that keeps them off (:mod:`isp_search.search.placement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from isp_search.data.cache import default_cache_dir, open_store
from isp_search.errors import UserError
from isp_search.search.context import StudyContext
from isp_search.search.experiment import read_json
from isp_search.search.preflight import data_problems, storage_problems, weight_problems
from isp_search.search.prepare import RECORD as PREPARE_RECORD
from isp_search.search.pretrain import pretrain_config
from isp_search.search.space import SearchSpace
from isp_search.train.config import TrainConfig

CHECK_TIMEOUT_S = 180.0


def problems_here(space: SearchSpace, configs: Sequence[TrainConfig], stores: Sequence[str]) -> list[str]:
    """What a trial on this node would trip on (run on the node itself)."""
    out: list[str] = []
    for cfg in configs:
        out += [text for _, text in data_problems(cfg) + weight_problems(cfg) if text not in out]
    out += [text for _, text in storage_problems(space)]
    root = default_cache_dir()
    missing = [key for key in stores if open_store(key, root) is None]
    if missing:
        out.append(f"{len(missing)} of the prepare stage's {len(stores)} reference stores are not in {root} "
                   "($ISP_SEARCH_CACHE on this node); fix: point ISP_SEARCH_CACHE at the shared cache folder on "
                   "every node")
    return out


def trial_nodes(space: SearchSpace) -> list[dict[str, Any]]:
    """Alive nodes whose total resources can hold one trial."""
    r = space.resources
    want = {"CPU": r.cpu, "GPU": r.gpu, **r.custom}
    return [n for n in ray.nodes() if n.get("Alive") and all(n["Resources"].get(k, 0) >= v
                                                             for k, v in want.items() if v > 0)]


def check_nodes(ctx: StudyContext, skip_bad: bool = False) -> StudyContext:
    """Run :func:`problems_here` on every trial node; refuse, or (``skip_bad``) leave the failing nodes out."""
    pre = pretrain_config(ctx.space)
    configs = ([pre] if pre is not None else []) + [ctx.cfg]
    stores = [row["key"] for row in (read_json(f"{ctx.exp.uri}/{PREPARE_RECORD}") or {}).get("stores", [])
              if row.get("key")]
    nodes = trial_nodes(ctx.space)
    task = ray.remote(num_cpus=0, max_retries=0)(problems_here)
    refs = {n["NodeID"]: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(ctx.space, configs, stores) for n in nodes}
    bad: dict[str, list[str]] = {}
    for node_id, ref in refs.items():
        try:
            found = ray.get(ref, timeout=CHECK_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as e:
            found = [f"the check did not finish there ({type(e).__name__})"]
        if found:
            bad[node_id] = found
    names = {n["NodeID"]: f"node {n.get('NodeManagerAddress', '?')} ({n['NodeID'][:8]})" for n in nodes}
    lines = [f"{names[i]}: " + "; ".join(found) for i, found in bad.items()]
    if not bad:
        print(f"nodes: {len(nodes)} node(s) can run a trial; each checked: data, weights, storage, caches", flush=True)
        return ctx
    if not skip_bad or len(bad) == len(nodes):
        why = "no node passed" if skip_bad else "fix them, or add --skip-bad-nodes to run on the others"
        raise UserError(f"nodes: {len(bad)} of {len(nodes)} node(s) that can run a trial cannot ({why}):\n  "
                        + "\n  ".join(lines))
    for line in lines:
        print(f"nodes: skipped (--skip-bad-nodes): {line}", flush=True)
    return replace(ctx, excluded_nodes=tuple(sorted(bad)))
