"""A study is one command: preflight -> prepare -> pretrain -> search -> export, each stage skipped when its
result is already there, so ``--resume`` after a kill at any point carries on where the study stopped.

* **preflight** (driver, before any GPU is asked for): ``isp_search.search.preflight``.
* **prepare**: every reference store a trial or the pretrain run can read, built once as Ray tasks over the
  cluster's CPUs (``isp_search.search.prepare``); ``<exp>/prepare.json`` lists them with build times.
* **pretrain**: the run every trial starts from (``isp_search.search.pretrain``), one GPU task, reused when it
  completed; ``<exp>/pretrain.json`` records it and the sha256 of the checkpoint the trials load.
* **search** and **export**: ``isp_search.search.tuner`` and ``isp_search.search.post``.

Fault injection for the kill-and-resume tests: ``ISP_SEARCH_HOLD=prepare`` (or ``pretrain``) makes that stage
write ``<exp>/hold-<stage>`` (holding the waiting process's pid) after its first piece of work, then wait to be
killed.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from isp_search.search.space import SearchSpace
from isp_search.search.tuner import Experiment, connect, find_experiment, new_experiment, run_search, write_meta

HOLD_ENV = "ISP_SEARCH_HOLD"


def _hold_marker(exp: Experiment, stage: str) -> str | None:
    if os.environ.get(HOLD_ENV) != stage or "://" in exp.uri:
        return None
    return f"{exp.uri}/hold-{stage}"


def _read_json(uri: str) -> dict | None:
    from isp_search.search.tuner import _fs

    fs, path = _fs(uri)
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        return None


def _write_json(uri: str, doc: dict) -> None:
    from isp_search.search.tuner import _fs

    fs, path = _fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(doc, indent=1).encode())


def run_preflight(space: SearchSpace) -> None:
    """Data roots, weight files, every choice and point, max_t, resources: one line per problem, exit 2."""
    from isp_search.search.preflight import preflight

    preflight(space)


def prepare_stage(space: SearchSpace, exp: Experiment, cfg: Any) -> list:
    """Build every reference store a trial of ``space`` (and its pretrain run) can ask for; record them."""
    from isp_search.search import prepare as P
    from isp_search.search.pretrain import pretrain_config

    pre = pretrain_config(space)
    configs = ([pre] if pre is not None else []) + [cfg]
    jobs = P.plan(configs, P.space_demosaicers(space))
    record = _read_json(f"{exp.uri}/prepare.json")
    if record and P.still_there(record["stores"], jobs):  # done by an earlier run of this study
        print(f"prepare: {len(jobs)} reference stores (recorded by this study, all present)", flush=True)
        P.run_hooks(configs)  # hooks check their own results
        return jobs
    marker = _hold_marker(exp, "prepare")
    P.prepare(jobs, use_ray=True, hold=P.hold_point(marker))
    P.run_hooks(configs)
    _write_json(f"{exp.uri}/prepare.json", {"stores": [j.row() for j in jobs]})
    return jobs


def pretrain_stage(space: SearchSpace, exp: Experiment) -> str | None:
    """The ``model.init_from`` every trial gets; a resumed study keeps the run it started with."""
    from isp_search.search import pretrain as PT

    record = _read_json(f"{exp.uri}/{PT.RECORD}")
    if record and record.get("init_from") and PT.is_complete_or_file(record["init_from"]):
        print(f"pretrain: {record['init_from']} (recorded by this study)", flush=True)
        return record["init_from"]
    init = PT.pretrain_stage(space, use_ray=True, hold_marker=_hold_marker(exp, "pretrain"))
    if init is not None:
        _write_json(f"{exp.uri}/{PT.RECORD}", PT.record(init))
    return init


def run_study(space: SearchSpace, name: str | None = None, resume: bool = False, address: str | None = None):
    """Every stage in order; returns what ``run_search`` returns."""
    from isp_search.search.tuner import base_train_config, check_space_keys

    cfg = base_train_config(space)
    check_space_keys(space, cfg)
    exp = find_experiment(space, name) if resume else new_experiment(space, name)
    connect(address)
    run_preflight(space)  # connected first, so resources are checked against the cluster; nothing written yet
    if not resume:
        write_meta(exp, space)
    prepare_stage(space, exp, cfg)
    init = pretrain_stage(space, exp)
    if init is not None:
        space = replace(space, base=replace(space.base, overrides={**space.base.overrides, "model.init_from": init}))
    return run_search(space, resume=resume, exp=exp)
