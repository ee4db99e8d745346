"""Preflight: everything a search needs, checked on the driver before a trial (or a GPU) is asked for.

A search that fails inside its trials costs ``num_samples × (1 + max_failures)`` trial starts before anyone sees
why, so the driver checks first and lists *every* problem, one line each naming the file, the key and the fix:

* every choice of every searched parameter (categorical choices, int/float ``low`` and ``high``) and every
  ``points_to_evaluate`` value, applied to the training config one at a time (type, range, registered names);
  a point outside its parameter's choices, range or step grid is refused;
* the data set of the base config and of every choice that changes it: the root exists (or is synthetic) and
  holds a train split and a val split (its own or carved from a paired train split, see
  :mod:`isp_search.data.formats`);
* every pretrained file the frozen networks need (unless ``backbone_weights: random``), ``model.init_from``
  and a GAN stage that would start from a random generator;
* ``scheduler.max_t`` against the number of evaluations (ASHA and MOASHA stop a trial at
  ``training_iteration >= max_t``; a trial reports once per evaluation plus one closing report, which must arrive
  for it to count as COMPLETE);
* the per-trial resources against ``ray.cluster_resources()`` when Ray is connected.
* the free space of the real-feature cache folder against the caches the trials will fill
  (``features.cache_real``; :func:`isp_search.search.prepare_real.size_problems`).

:func:`check` raises :class:`PreflightError` (exit 2) listing them all; nothing has been started then.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray

from isp_search import weights
from isp_search.configio import NearestSource, Source, load_yaml
from isp_search.data.demosaic import DEMOSAICERS
from isp_search.data.formats import get_format
from isp_search.errors import UserError
from isp_search.models import spec_for
from isp_search.models.checkpoint import resolve_checkpoint_path
from isp_search.raw import PRESETS
from isp_search.search.context import StudyContext
from isp_search.search.experiment import filesystem
from isp_search.search.prepare_real import size_problems as real_cache_size_problems
from isp_search.search.sampling import to_overrides
from isp_search.search.space import Param, SearchSpace
from isp_search.train.config import GAN_MODES, TrainConfig, apply_overrides
from isp_search.train.losses import LOSSES
from isp_search.train.step import BRANCH_NET

# frozen network of the trainer -> the weight files it loads (isp_search.weights names)
NET_FILES = {"vgg": ("vgg19",), "vit": ("vit_b16",), "alex": ("alexnet",),
             "lpips": ("alexnet", "lpips_alex_v0.1"), "dists": ("vgg16", "dists_alpha_beta")}
EVAL_NETS = ("lpips",)  # every evaluation computes LPIPS


class PreflightError(UserError):
    """Every problem found, one per line; the CLI prints it and exits with 2."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__(f"preflight: {len(lines)} problem(s), nothing was started:\n" + "\n".join(
            f"  {line}" for line in lines))


def _locator(path: str | None) -> Callable[[str], str]:
    """``key -> file:line`` for a YAML file (the nearest enclosing key that has a line)."""
    try:
        _, src = load_yaml(path) if path else (None, Source("<inline>"))
    except UserError:
        src = Source(str(path))
    return NearestSource(src.file, src.lines).where


def _same(a: Any, b: Any) -> bool:
    """YAML-equal choice values: True is not 1, 0.5 is 0.5."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def point_value_problem(p: Param, v: Any) -> str | None:
    """Why ``v`` is not a value ``p`` can take (None when it is)."""
    if p.type == "categorical":
        return None if any(_same(v, c) for c in p.choices) else f"{v!r} is not among the choices {list(p.choices)}"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return f"{v!r} is not a finite number ({p.type} in [{p.low:g}, {p.high:g}])"
    if p.type == "int" and float(v) != int(v):
        return f"{v!r} is not an integer"
    if not p.low <= v <= p.high:
        return f"{v!r} is outside [{p.low:g}, {p.high:g}]"
    if p.step and abs((v - p.low) / p.step - round((v - p.low) / p.step)) > 1e-9:
        return f"{v!r} is not on the grid {p.low:g} + k·{p.step:g}"
    return None


def param_values(p: Param) -> list[tuple[str, Any]]:
    """(label, value) of every value to try: each choice, or the two ends of a range."""
    if p.type == "categorical":
        return [(f"choice {i + 1} ({c!r})", c) for i, c in enumerate(p.choices)]
    cast = int if p.type == "int" else float
    return [(f"low ({p.low:g})", cast(p.low)), (f"high ({p.high:g})", cast(p.high))]


def config_problems(cfg: Any, pretrained_init: bool, memo: dict | None = None) -> list[tuple[str, str]]:
    """(config key, problem; fix) for one resolved training config: names, data, weights, init."""
    out: list[tuple[str, str]] = []
    for key, check in (("model.arch", lambda: spec_for(cfg.model.arch)),
                       ("data.demosaicer", lambda: DEMOSAICERS.get(cfg.data.demosaicer)),
                       ("model.preset", lambda: cfg.model.preset is None or PRESETS.get(cfg.model.preset))):
        try:
            check()
        except UserError as e:
            out.append((key, f"{e}; fix: use one of the valid names"))
    out += data_problems(cfg, memo)
    out += weight_problems(cfg)
    init = cfg.model.init_from
    if pretrained_init:
        pass  # the pretrain stage sets model.init_from for every trial
    elif init and "://" not in init and (missing := _init_problem(init)):
        out.append(("model.init_from", (f"{missing}; fix: point it at the pretrain run (on storage every node "
                                        "sees) or add a pretrain: section to the space")))
    elif cfg.mode in GAN_MODES and not init and not getattr(cfg.model, "allow_scratch", False):
        out.append(("model.init_from", (f"the {cfg.mode} (GAN) stage would start from a random generator; fix: add "
                                        "a pretrain: section to the space, set model.init_from, or "
                                        "model.allow_scratch: true")))
    return out


def _init_problem(init: str) -> str | None:
    """Why ``model.init_from`` cannot be loaded from (a run folder needs a checkpoint in it), else None."""
    try:
        resolve_checkpoint_path(init)
    except UserError as e:
        return str(e)
    return None


def data_problems(cfg: Any, memo: dict | None = None) -> list[tuple[str, str]]:
    """The data set root exists (or is synthetic) and holds the train and val splits training reads."""
    d = cfg.data
    key = (d.root, d.format, d.synthetic, d.splits, d.n_val)
    if memo is not None and key in memo:  # every choice of a search usually shares one data set
        return memo[key]
    out: list[tuple[str, str]] = []
    try:
        fmt = get_format(d.format)
    except UserError as e:
        return [("data.format", f"{e}; fix: use one of the valid formats")]
    root = Path(d.root)
    if not root.is_dir():
        if not d.synthetic:
            out.append(("data.root", (f"no such folder {root}; fix: point data.root at the {fmt.name} data set "
                                      "(an absolute path that every node mounts) or set data.synthetic: true")))
    else:
        raw, rgb = root / "train" / fmt.raw_dir, root / "train" / fmt.rgb_dir
        if not raw.is_dir() or not any(raw.iterdir()):
            out.append(("data.root", (f"{root} has no train split: no RAW files in {raw} ({fmt.description}); "
                                      f"fix: point data.root at a {fmt.name} data set")))
        elif not rgb.is_dir():
            out.append(("data.root", f"{root} has no train RGB photos: no folder {rgb}; fix: add them ({fmt.description})"))
        own_val = fmt.has_split(root, "val") and (root / "val" / fmt.rgb_dir).is_dir()
        carved = fmt.train_paired and d.n_val != 0
        recorded = bool(d.splits) and Path(d.splits).is_file()
        if not (own_val or carved or recorded):
            out.append(("data.root", f"{root} has no val split (every evaluation reads it): expected "
                                     f"{root / 'val' / fmt.raw_dir} and {root / 'val' / fmt.rgb_dir}; fix: add "
                                     "them" + (" or leave data.n_val unset" if fmt.train_paired else "")))
    if memo is not None:
        memo[key] = out
    return out


def weight_problems(cfg: Any) -> list[tuple[str, str]]:
    """Every pretrained file the active loss terms and the evaluation load (none with backbone_weights: random)."""
    if cfg.backbone_weights == "random":
        return []
    nets = {BRANCH_NET[LOSSES.get(t).branch] for t in cfg.active_terms if LOSSES.get(t).branch} | set(EVAL_NETS)
    needed = {f for n in nets for f in NET_FILES[n]}
    out = []
    for row in weights.status():
        if row["name"] in needed and row["path"] is None:
            try:
                weights.require(row["name"])
            except UserError as e:
                out.append(("backbone_weights", str(e)))
    return out


def scheduler_problems(space: SearchSpace, base_evals: int, evals: dict[str, int]) -> list[tuple[str, str]]:
    """``max_t`` must exceed every trial's evaluations (its closing report is one more iteration)."""
    s, kind = space.scheduler, space.scheduler_type
    if kind not in ("asha", "moasha"):
        return []
    max_t = s.max_t or base_evals + 1
    worst_label, worst = max(evals.items(), key=lambda kv: kv[1]) if evals else ("", base_evals)
    worst_label = "each trial" if worst <= base_evals else worst_label  # else: the choice that evaluates most
    worst = max(worst, base_evals)
    if max_t > worst:
        return []
    given = f"{max_t}" if s.max_t else f"the default {max_t} (base evaluations + 1)"
    return [("scheduler.max_t", (f"{given} is at or below the {worst} evaluations of {worst_label}: "
                                 f"{kind.upper()} would stop every such trial before its closing report, so none "
                                 f"could be COMPLETE; fix: max_t: {worst + 1} or more"))]


def resource_problems(space: SearchSpace) -> list[tuple[str, str]]:
    """Per-trial resources the connected Ray cluster does not have at all (a trial would wait forever)."""
    if not ray.is_initialized():
        return []
    have = ray.cluster_resources()
    r = space.resources
    out = []
    for key, name, want in (("resources.cpu", "CPU", r.cpu), ("resources.gpu", "GPU", r.gpu),
                            *((f"resources.custom.{k}", k, v) for k, v in r.custom.items())):
        if want > 0 and have.get(name, 0) < want:
            flag = {"GPU": "--num-gpus", "CPU": "--num-cpus"}.get(name, "--resources")
            out.append((key, (f"a trial asks for {want:g} {name} but the cluster has {have.get(name, 0):g} in all; "
                              f"fix: lower {key} or add nodes that have it (ray start --address ... {flag})")))
    return out


def problems(space: SearchSpace, cfg: Any) -> list[str]:
    """Every problem of ``space`` on the base training config ``cfg``, one line each (empty: ready to run)."""
    in_space = _locator(space.source)
    in_base = _locator(space.base.config) if isinstance(space.base.config, str) else in_space
    pretrained_init = space.pretrain.enabled if hasattr(space, "pretrain") else False

    def base_line(key: str, text: str) -> str:
        if key in space.command_line:
            return f"--set {key}={space.command_line[key]}: {text}"
        if key in space.base.overrides:
            return f"{in_space(f'base.overrides.{key}')}: base.overrides.{key}: {text}"
        return f"{in_base(key)}: {key}: {text}"

    lines: list[str] = []
    memo: dict = {}
    base_found = config_problems(cfg, pretrained_init, memo)
    lines += [base_line(k, t) for k, t in base_found]
    evals: dict[str, int] = {}

    def variant(where: str, key: str, label: str, overrides: dict[str, Any]) -> None:
        try:
            vcfg = apply_overrides(cfg, overrides)
        except UserError as e:
            lines.append(f"{where}: {key}: {label}: {e}; fix: correct or remove this value")
            return
        evals[f"{key} {label}"] = vcfg.num_evaluations
        for k, t in config_problems(vcfg, pretrained_init, memo):
            if (k, t) not in base_found:
                lines.append(f"{where}: {key}: {label} sets {k}: {t}")

    for name, p in space.space.items():
        for label, value in param_values(p):
            variant(in_space(f"space.{name}"), f"space.{name}", label, to_overrides(space, {name: value}))
    for i, point in enumerate(space.search.points_to_evaluate):
        key = f"search.points_to_evaluate[{i}]"
        bad = [(n, why) for n, v in point.items() if (why := point_value_problem(space.space[n], v))]
        for n, why in bad:
            lines.append(f"{in_space('search.points_to_evaluate')}: {key}.{n}: {why}; fix: use a value inside "
                         f"space.{n} (or widen space.{n})")
        if not bad:
            variant(in_space("search.points_to_evaluate"), key, "this point", to_overrides(space, dict(point)))
    lines += [f"{in_space(k)}: {k}: {t}" for k, t in scheduler_problems(space, cfg.num_evaluations, evals)]
    lines += [f"{in_space(k)}: {k}: {t}" for k, t in resource_problems(space)]
    lines += [f"{in_space(k)}: {k}: {t}" for k, t in storage_problems(space)]
    if not any(k.startswith("data.") for k, _ in base_found):  # the real-feature caches' size needs the data set
        lines += [base_line(k, t) for k, t in real_cache_size_problems(space, cfg)]
    return lines


def storage_problems(space: SearchSpace) -> list[tuple[str, str]]:
    """A storage path (``storage.path`` / ``--storage``) the driver cannot create and write a file in."""
    uri = space.storage.path
    try:
        fs, path = filesystem(uri)
        if isinstance(fs, pyarrow.fs.LocalFileSystem):  # nothing is created: a probe in the deepest existing folder
            p = Path(path)
            while not p.exists() and p != p.parent:
                p = p.parent
            path = str(p)
        path = f"{path.rstrip('/')}/.isp-search-write-check-{os.getpid()}"
        with fs.open_output_stream(path) as f:
            f.write(b"ok")
        fs.delete_file(path)
    except (OSError, ValueError) as e:  # pyarrow raises OSError subclasses (and ValueError for a bad URI)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [("storage.path", (f"cannot write to {uri} (storage.path or --storage): {reason}; fix: a folder "
                                  "every node can write (an NFS mount at the same path, or s3://bucket/prefix)"))]
    return []


def check(space: SearchSpace, cfg: TrainConfig) -> None:
    """Raise :class:`PreflightError` listing every problem; return quietly when the search can start."""
    found = problems(space, cfg)
    if found:
        raise PreflightError(found)


def preflight(ctx: StudyContext) -> None:
    """The study's first stage: :func:`check` on its space and base training config."""
    check(ctx.space, ctx.cfg)
