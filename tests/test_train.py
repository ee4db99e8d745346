"""The trainer end to end on the tiny synthetic set: modes, learning, resume, divergence, run folder, CLI, bench."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from isp_search.cli import main
from isp_search.search.pretrain import config_key, run_once
from isp_search.train import apply_overrides, load_train_config, train

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny(synth_root, mode: str, **extra):
    base = "smoke_pretrain.yaml" if mode == "pretrain" else "smoke_unpaired.yaml"
    over = {"mode": mode, "data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 2,
            "data.pairing": "shuffled" if mode == "unpaired" else "paired", "train.progress": False,
            "train.steps": 2, "train.eval_interval": 2, "train.log_interval": 1}
    over.update(extra)
    return apply_overrides(load_train_config(CONFIGS / base), over)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# The paper's loss set of each mode (docs/method.md §4.8), written out here rather than read from MODE_TERMS: a term
# added to or dropped from a mode in the source turns the test red.
LOSS_SETS = {
    "pretrain": {"content", "mse", "tv"},
    "paired_noadv": {"content", "lpips", "dists", "tv", "color"},
    "paired": {"content", "lpips", "dists", "tv", "color", "adv_relu1", "adv_relu4"},
    "unpaired": {"content", "adv_color", "adv_relu1", "adv_relu4", "tv"},
}


@pytest.mark.parametrize("mode", list(LOSS_SETS))
def test_each_mode_trains_exactly_its_loss_set(synth_root, tmp_path, mode):
    """Every logged step of a mode has a finite ``loss/<term>`` for exactly the mode's terms, each reaching the
    generator (DLA norm > 0), and steps exactly the discriminators of its adversarial terms."""
    cfg = tiny(synth_root, mode, **{"optim.d_texture_every": 1, "optim.d_color_every": 1})
    want = LOSS_SETS[mode]
    assert set(cfg.active_terms) == want
    s = train(cfg, tmp_path / mode)
    assert s["status"] == "completed" and s["step"] == 2
    rows = [r for r in read_jsonl(tmp_path / mode / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2]
    want_discs = {"d_" + t.removeprefix("adv_") for t in want if t.startswith("adv_")}
    for r in rows:
        terms = {k.removeprefix("loss/") for k in r if k.startswith("loss/")} - {"total"}
        assert terms == want, (r["step"], sorted(terms ^ want))
        assert all(math.isfinite(r[f"loss/{t}"]) for t in terms) and math.isfinite(r["loss/total"])
        assert {k.removeprefix("dla/weight_") for k in r if k.startswith("dla/weight_")} == want
        assert all(r[f"dla/norm_{t}"] > 0 for t in want), {t: r[f"dla/norm_{t}"] for t in want}
        assert {k.split("/")[0] for k in r if k.startswith("d_")} == want_discs


def test_pretrain_lowers_demosaic_mse(synth_root, tmp_path):
    s = train(tiny(synth_root, "pretrain", **{"train.steps": 30, "train.eval_interval": 30}), tmp_path / "run")
    mse = [r["loss/mse"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert s["status"] == "completed" and len(mse) == 30
    assert sum(mse[-5:]) / 5 < 0.7 * sum(mse[:5]) / 5, mse


def test_resume_is_exact_and_run_folder(synth_root, tmp_path):
    cfg = tiny(synth_root, "unpaired", **{"train.steps": 4, "train.eval_interval": 2, "optim.d_color_every": 2,
                                          "optim.d_texture_every": 1})
    reports = []
    straight = train(cfg, tmp_path / "a", report=lambda step, m, d: reports.append((step, m, d)))
    assert [r[0] for r in reports] == [2, 4] and {"psnr", "lpips", "ssim", "score"} <= set(reports[0][1])
    assert Path(reports[0][2], "last.pt").is_file()
    train(apply_overrides(cfg, {"train.steps": 2}), tmp_path / "b")
    (tmp_path / "b" / "metrics.jsonl").open("a").write('{"kind": "train", "step": 3, "loss/total": 1.0}\n{"ki')
    # deferred: tensorboard imports TensorFlow when it is installed (seconds), for this test only
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "b" / "tb")) as w:  # ... and after step 3's TensorBoard scalar
        w.add_scalar("loss/total", 1.0, 3)
    resumed = train(cfg, tmp_path / "b", resume=tmp_path / "b")  # as if killed mid-way through step 3's row
    assert straight["status"] == resumed["status"] == "completed"
    times = [j for j in read_jsonl(tmp_path / "a" / "metrics.jsonl") if j["kind"] == "time"]
    assert [t["step"] for t in times] == [2, 4, 4]  # after each evaluation, then after the test split
    assert times[0]["setup_s"] > 0 and all(t["train_s"] > 0 and t["eval_s"] > 0 for t in times[:2])
    assert times[2]["test_s"] > 0 and sum(sum(v for k, v in t.items() if k.endswith("_s")) for t in times) <= (
        straight["elapsed_s"])
    rows = {r: [(j["kind"], j["step"]) for j in map(json.loads, (tmp_path / r / "metrics.jsonl").read_text()
                                                    .splitlines()) if j["kind"] not in ("test", "time")]
            for r in "ab"}
    assert rows["b"] == rows["a"]  # each step's rows once: those past the resumed checkpoint were written again
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=False)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k in a["state_dict"]:
        assert torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6), k
    for t, sd in a["optim_state"]["discriminators"].items():
        for k in sd:
            assert torch.allclose(sd[k], b["optim_state"]["discriminators"][t][k], atol=1e-6), (t, k)
    run = tmp_path / "a"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "summary.json", "checkpoints/best.pt",
                 "samples/step_000002.png", "samples/step_000004.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # TensorBoard (written with its own TensorFlow stub, not TensorFlow): the resumed run has each step once, as the
    # straight run
    # deferred: tensorboard imports TensorFlow when it is installed (seconds), for this test only
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = {}
    for r in "ab":
        events = EventAccumulator(str(tmp_path / r / "tb"))
        events.Reload()
        tb[r] = {tag: [e.step for e in events.Scalars(tag)] for tag in ("loss/total", "val/psnr")}
    assert tb["a"] == {"loss/total": [1, 2, 3, 4], "val/psnr": [2, 4]} and tb["b"] == tb["a"], tb
    assert json.loads((run / "run.json").read_text())["seed"] == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and {"psnr", "ssim", "lpips"} <= set(summary["test"])
    assert load_train_config(run / "config.yaml") == cfg  # the resolved config reads back identically
    from isp_search.models.checkpoint import load_generator

    loaded = load_generator(run)
    assert loaded.spec.name == "efficient_isp" and loaded.preset == "paper"
    assert loaded.model(torch.zeros(1, 4, 16, 16)).shape == (1, 3, 32, 32)


class Stopped(Exception):
    """What a scheduler's stop looks like from inside train(): the report callback never returns."""


@pytest.mark.slow
def test_each_evaluation_is_in_tensorboard_when_reported_and_a_progress_line(synth_root, tmp_path, capsys):
    """A search trial's view: at every report its evaluation is already on disk in TensorBoard (flushed, not
    waiting for the writer's 120 s timer or for close), one progress line per evaluation names the trial; a stop
    at the second report leaves both evaluations readable."""
    # deferred: tensorboard imports TensorFlow when it is installed (seconds), for this test only
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny(synth_root, "unpaired", **{"train.steps": 6, "train.eval_interval": 2})  # train.progress: off
    seen = []

    def report(step: int, metrics: dict, checkpoint_dir: str) -> None:
        events = EventAccumulator(str(tmp_path / "run" / "tb"))
        events.Reload()
        seen.append([e.step for e in events.Scalars("val/psnr")] if "val/psnr" in events.Tags()["scalars"] else [])
        if step == 4:
            raise Stopped

    with pytest.raises(Stopped):
        train(cfg, tmp_path / "run", report=report, progress_label="trial 0a1b2c3d")
    assert seen == [[2], [2, 4]]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("trial 0a1b2c3d:")]
    assert len(lines) == 2 and lines[0].startswith("trial 0a1b2c3d: 2/6 step (33%), "), lines
    assert re.search(r", eta \d+s, psnr [\d.]+, ssim [\d.]+, lpips [\d.]+$", lines[0]), lines
    assert lines[1].startswith("trial 0a1b2c3d: 4/6 step (67%), "), lines


def test_divergence_keeps_last_good_checkpoint(synth_root, tmp_path, capsys):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text((CONFIGS / "smoke_pretrain.yaml").read_text())
    run = tmp_path / "run"
    code = main(["train", str(cfg_path), "--run-dir", str(run), "--set", f"data.root={synth_root}",
                 "--set", "data.synthetic=false", "--set", "optim.g_lr=1e30", "--set", "train.steps=5",
                 "--set", "train.eval_interval=1", "--set", "train.progress=false", "--set", "data.eval_limit=1"])
    assert code == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and "non-finite" in summary["reason"]
    assert 1 <= summary["step"] < 5
    last = torch.load(run / "checkpoints/last.pt", weights_only=False)
    assert last["step"] == summary["step"]  # the checkpoint of the last finished step, not of the bad one


def test_cli_bad_config_key_is_one_line(tmp_path, capsys):
    code = main(["train", str(CONFIGS / "smoke_pretrain.yaml"), "--set", "optim.g_lrr=1e-4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "g_lrr" in err and "g_lr" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: pretrain\noptim:\n  g_lr: -1\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml:3" in err and "optim.g_lr" in err


def test_bench_train_meets_targets(synth_root, capsys):
    code = main(["bench-train", str(CONFIGS / "smoke_unpaired.yaml"), "--steps", "1", "--json",
                 "--set", f"data.root={synth_root}", "--set", "data.synthetic=false"])
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("step_ms", "flops_per_step", "floor_flops_per_step", "flops_ratio_to_floor",
              "frozen_backward_passes_per_branch"):
        assert k in res
    assert res["frozen_backward_passes_per_branch"] <= 1
    assert res["flops_ratio_to_floor"] <= 1.25
    assert set(res["frozen_backward_passes_by_branch"]) == {"content", "vit", "alex_gray"}


def test_paper_configs_load_with_paper_defaults():
    paths = sorted((CONFIGS / "paper").glob("*.yaml"))
    assert len(paths) == 24
    for p in paths:
        cfg = load_train_config(p)
        rmfa = cfg.model.arch == "rmfa_tiny"
        assert cfg.optim.g_lr == (1e-4 if rmfa else 5e-4) and cfg.optim.d_texture_every == (4 if rmfa else 10)
        assert cfg.train.batch_size == 32 and cfg.optim.g_beta1 == 0.5 and Path(cfg.data.root).is_absolute()


@pytest.mark.slow  # 300 pretrain steps + two short unpaired runs (~25 s)
def test_synth_walkthrough_unpaired_starts_from_pretrain(synth_root, tmp_path):
    """`make synth-isp` in miniature: synth_pretrain, then synth_unpaired initialised from that run folder. The
    unpaired output starts from the pretrained one (close val PSNR, far above a random generator) and does not
    collapse towards black or white."""
    common = {"data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 2, "train.progress": False}
    un_cfg = load_train_config(CONFIGS / "synth_unpaired.yaml")
    assert un_cfg.model.init_from == str(CONFIGS.parent / "runs" / "synth_pretrain")  # where make synth-isp writes
    pre = train(apply_overrides(load_train_config(CONFIGS / "synth_pretrain.yaml"),
                                {**common, "train.steps": 300, "train.eval_interval": 300}), tmp_path / "pre")
    scratch = train(apply_overrides(un_cfg, {**common, "model.init_from": None, "model.allow_scratch": True,
                                             "train.steps": 1,
                                             "train.eval_interval": 1}), tmp_path / "scratch")
    un = train(apply_overrides(un_cfg, {**common, "model.init_from": str(tmp_path / "pre"), "train.steps": 6,
                                        "train.eval_interval": 6, "train.log_interval": 1}), tmp_path / "un")
    assert pre["status"] == un["status"] == "completed"
    assert abs(un["val"]["psnr"] - pre["val"]["psnr"]) < 2.0
    assert pre["val"]["psnr"] > scratch["val"]["psnr"] + 3.0
    means = [r["out/mean"] for r in read_jsonl(tmp_path / "un" / "metrics.jsonl") if r["kind"] == "train"]
    assert len(means) == 6 and all(0.15 < m < 0.85 for m in means)
    assert (tmp_path / "un" / "samples" / "step_000006.png").is_file()


def _pretrain(root: Path, steps: int, over: dict) -> Path:
    """The pretrain stage's run of configs/synth_pretrain.yaml (what `make demo`'s space trains): its folder is
    named by the resolved config, so the same config finds the same run."""
    cfg = apply_overrides(load_train_config(Path(__file__).resolve().parents[1] / "configs" / "synth_pretrain.yaml"),
                          {"train.steps": steps, "train.eval_interval": steps, "train.log_interval": 1, **over})
    run_dir = root / f"{cfg.name}-{config_key(cfg)}"
    run_once(cfg, run_dir)
    return run_dir


def test_pretrain_run_reused_resumed_or_trained_by_config(synth_root, tmp_path):
    pretrain = _pretrain
    over = {"data.root": str(synth_root), "data.synthetic": False, "data.eval_limit": 2, "train.batch_size": 2,
            "train.progress": False}
    first = Path(pretrain(tmp_path, 2, over))
    last = first / "checkpoints" / "last.pt"
    stamp = last.stat().st_mtime_ns
    assert json.loads((first / "summary.json").read_text())["status"] == "completed"
    assert Path(pretrain(tmp_path, 2, over)) == first and last.stat().st_mtime_ns == stamp  # same config: reused
    other = Path(pretrain(tmp_path, 2, {**over, "data.demosaicer": "bilinear"}))  # another config: its own run
    assert other != first and load_train_config(other / "config.yaml").data.demosaicer == "bilinear"
    assert last.stat().st_mtime_ns == stamp
    (other / "summary.json").unlink()  # a run cut off after its last checkpoint: resumed, not restarted
    n_rows = len(read_jsonl(other / "metrics.jsonl"))
    assert Path(pretrain(tmp_path, 2, {**over, "data.demosaicer": "bilinear"})) == other
    assert json.loads((other / "summary.json").read_text())["status"] == "completed"
    assert not [r for r in read_jsonl(other / "metrics.jsonl")[n_rows:] if r["kind"] == "train"]
