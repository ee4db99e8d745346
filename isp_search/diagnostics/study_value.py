"""What finished studies were worth, from their own records (``isp-search study-value EXP [EXP ...]``).

For each experiment folder (``<storage>/<name>``):

* **baselines and confirmed values**: the start (``baselines.json``) and every configuration the confirmation stage
  re-trained (``confirm.json``: the default point and the searched ones), val and test, mean ± sd over n runs;
* **hypervolume against trial count**: the area of the (val LPIPS, val PSNR) plane that the COMPLETE trials among
  the first k (in Optuna's trial order) dominate beyond the start, i.e. with the start's values as the reference
  point; comparing studies that differ only in ``search.sampler`` shows what the sampler buys per trial;
* **where the wall clock went**: per stage (``stages.json``), the trial slots' time (wall x slots) split into the
  runs' own ``kind: time`` rows (training steps, data wait, start-up, evaluation and checkpoints, reporting to
  Ray) and the rest (Ray scheduling, worker start-up, idle slots); prepare, the node check and export (baselines,
  gates, latency) count as overhead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from isp_search.diagnostics.scheduler_sim import hypervolume
from isp_search.search.experiment import read_json, read_meta
from isp_search.search.optuna_storage import load_study
from isp_search.search.reconcile import final_trials

TIME_KEYS = ("train_s", "data_s", "setup_s", "eval_s", "checkpoint_s", "test_s", "report_s")
PARTS = {"train steps": ("train_s",), "data wait": ("data_s",), "start-up": ("setup_s",),
         "eval + ckpt": ("eval_s", "checkpoint_s", "test_s"), "report": ("report_s",)}  # a run's time rows
SLOTTED = ("search", "confirm")  # stages whose runs share the study's trial slots


@dataclass
class StudyValue:
    name: str
    sampler: str
    states: dict[str, int]
    start: dict[str, dict[str, float]]  # split -> metric -> value (empty: the trials start from scratch)
    confirmed: list[dict[str, Any]]  # {number, role, n, mean, sd}
    front: list[tuple[int, float, float]]  # (trial number, val lpips, val psnr) of every COMPLETE trial, in order
    stages: dict[str, float]  # stage -> seconds
    slots: int
    run_time: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> time key -> seconds

    @property
    def reference(self) -> tuple[tuple[float, float], str]:
        """The hypervolume's reference point (val lpips, val psnr): the start, else the first trial (the default
        point where the space has one), else the worst value of each objective among the COMPLETE trials."""
        if self.start.get("val"):
            return (self.start["val"]["lpips"], self.start["val"]["psnr"]), "the start"
        if self.front and self.front[0][0] == 0:
            return self.front[0][1:], "trial #0"
        return (max((p[1] for p in self.front), default=math.nan),
                min((p[2] for p in self.front), default=math.nan)), "the worst trial values"

    def hypervolume_at(self, k: int) -> float:
        """Hypervolume beyond the reference point of the COMPLETE trials among the first ``k``."""
        return hypervolume([(lp, ps) for n, lp, ps in self.front if n < k], ref=self.reference[0])


def time_rows(run_dir: Path) -> dict[str, float]:
    """The sum of a run's ``kind: time`` rows (nothing when it has none)."""
    out = dict.fromkeys(TIME_KEYS, 0.0)
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return out
    for line in f.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("kind") == "time":
            for k in TIME_KEYS:
                out[k] += float(row.get(k, 0.0))
    return out


def _add(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    return {k: total.get(k, 0.0) + part.get(k, 0.0) for k in TIME_KEYS}


def read_study(folder: str | Path) -> StudyValue:
    """Everything :func:`format_report` shows, from the experiment folder's records and its Optuna study."""
    folder = Path(folder)
    meta = read_meta(str(folder))
    base = read_json(f"{folder}/baselines.json") or {}
    start = base.get("start") or {}
    study = load_study(meta["study_name"], meta["optuna_storage"])
    trials = sorted(final_trials(study), key=lambda t: t.number)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    names = [m for m, _ in meta["objectives"]]
    front = [(t.number, t.values[names.index("lpips")], t.values[names.index("psnr")]) for t in trials
             if t.state == optuna.trial.TrialState.COMPLETE and t.values]
    confirmed = []
    for number, c in sorted((read_json(f"{folder}/confirm.json") or {}).items(), key=lambda kv: int(kv[0])):
        role = "default" if int(number) == 0 and trials and trials[0].system_attrs.get("fixed_params") else "searched"
        confirmed.append({"number": int(number), "role": role, "n": c["n"], "mean": c["mean"], "sd": c["sd"]})
    stages: dict[str, float] = {}
    for s in (read_json(f"{folder}/stages.json") or {}).get("stages", []):
        stages[s["stage"]] = stages.get(s["stage"], 0.0) + float(s["seconds"])
    run_time = {"search": {}, "confirm": {}, "pretrain": {}}
    for d in sorted(folder.glob("trial_*/run")):
        run_time["search"] = _add(run_time["search"], time_rows(d))
    for d in sorted((folder / "confirm").glob("*-seed*")):
        run_time["confirm"] = _add(run_time["confirm"], time_rows(d))
    pre = read_json(f"{folder}/pretrain.json") or {}
    if pre.get("init_from") and stages.get("pretrain", 0.0) > 5.0:  # built by this study, not found done
        run_time["pretrain"] = time_rows(Path(pre["init_from"]).parent.parent if pre["init_from"].endswith(".pt")
                                         else Path(pre["init_from"]))
    return StudyValue(meta["name"], str(meta.get("sampler", "?")), states,
                      {k: start[k] for k in ("val", "test") if start.get(k)}, confirmed, front, stages,
                      int(meta.get("max_concurrent", 1)), run_time)


def _pm(mean: float, sd: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def value_lines(v: StudyValue) -> list[str]:
    n = sum(v.states.values())
    lines = [f"study {v.name}: {n} trials (" + ", ".join(f"{c} {s}" for s, c in sorted(v.states.items())) + ")",
             "  val and test, mean ± sd over n training runs (the start is one checkpoint, measured once):",
             f"    {'':12s} {'n':>2s}  {'val lpips':>17s}  {'val psnr':>13s}  {'test lpips':>17s}  {'test psnr':>13s}"]
    s = v.start
    if s.get("val"):
        lines.append(f"    {'start':12s} {1:2d}  {s['val']['lpips']:17.4f}  {s['val']['psnr']:13.2f}  "
                     f"{s.get('test', {}).get('lpips', math.nan):17.4f}  {s.get('test', {}).get('psnr', math.nan):13.2f}")
    for c in v.confirmed:
        m, sd = c["mean"], c["sd"]
        label = f"{c['role']} #{c['number']}"
        lines.append(f"    {label:12s} {c['n']:2d}  {_pm(m['val/lpips'], sd['val/lpips'], 4):>17s}  "
                     f"{_pm(m['val/psnr'], sd['val/psnr'], 2):>13s}  {_pm(m['test/lpips'], sd['test/lpips'], 4):>17s}  "
                     f"{_pm(m['test/psnr'], sd['test/psnr'], 2):>13s}")
    return lines


def hypervolume_lines(studies: Sequence[StudyValue], every: int = 8) -> list[str]:
    """Hypervolume beyond each study's start after k trials, k = every, 2 every, ..., and in % of the best; a study
    that ran fewer than k trials shows none (its value would only repeat the last)."""
    runs = {v.name: sum(v.states.values()) for v in studies}
    n = max(runs.values())
    ks = sorted({*range(every, n + 1, every), *runs.values()})
    hv = {v.name: [v.hypervolume_at(k) if k <= runs[v.name] else math.nan for k in ks] for v in studies}
    top = max((x for xs in hv.values() for x in xs if math.isfinite(x)), default=0.0) or math.nan
    refs = sorted({v.reference[1] for v in studies})
    lines = [(f"hypervolume (val LPIPS x val PSNR) beyond the reference point ({', '.join(refs)}), by trials run; "
              "in % of the largest:"),
             "  trials  " + "  ".join(f"{v.name + ' (' + v.sampler + ')':>24s}" for v in studies)]
    for i, k in enumerate(ks):
        lines.append(f"  {k:6d}  " + "  ".join(f"{hv[v.name][i]:14.5f} {100 * hv[v.name][i] / top:6.1f} %  "
                                                if math.isfinite(hv[v.name][i]) else f"{'—':>24s}"
                                                for v in studies).rstrip())
    return lines


def time_lines(v: StudyValue) -> list[str]:
    """Each stage's wall clock; for the stages with trial slots, where the slots' time went."""
    wall = sum(v.stages.values())
    lines = [f"where {v.name}'s wall clock went: {wall:.0f} s in all, {v.slots} trial slot(s)",
             f"  {'stage':9s} {'wall s':>7s} {'slot s':>7s}  " + "  ".join(f"{p:>11s}" for p in PARTS)
             + f"  {'Ray / idle':>10s}"]
    train_total = 0.0
    for stage, secs in v.stages.items():
        slots = v.slots if stage in SLOTTED else 1
        t = v.run_time.get(stage) or {}
        shares = {p: sum(t.get(k, 0.0) for k in keys) for p, keys in PARTS.items()}
        train_total += shares["train steps"] * (1.0 if stage in SLOTTED or stage == "pretrain" else 0.0)
        rest = slots * secs - sum(shares.values())
        cells = "  ".join(f"{100 * x / (slots * secs):10.1f}%" if secs > 0 and t else f"{'':>11s}"
                          for x in shares.values())
        idle = f"{100 * rest / (slots * secs):9.1f}%" if secs > 0 and t else f"{'(overhead)':>10s}"
        lines.append(f"  {stage:9s} {secs:7.0f} {slots * secs:7.0f}  {cells}  {idle}")
    if wall > 0:
        lines.append(f"  training steps: {train_total:.0f} s of {wall * v.slots:.0f} slot-seconds over the whole "
                     f"study = {100 * train_total / (wall * v.slots):.1f} %")
    return lines


def format_report(studies: Sequence[StudyValue], every: int = 8) -> str:
    out: list[str] = []
    for v in studies:
        out += value_lines(v) + [""]
    out += hypervolume_lines(studies, every) + [""]
    for v in studies:
        out += time_lines(v) + [""]
    return "\n".join(out).rstrip()

