"""Publishing a model to the leaderboard: `leaderboard add` (export, evaluation, timing) records its deployed files,
data and device; a model its export gates refuse, at the gate size or the deployed one, gets no row, from the CLI,
from publish() and from the search's export of a trial."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from isp_search.export import leaderboard as LB


def _paper_sd(folder, arch="efficient_isp", nan=False):
    import torch

    from isp_search.models import create_generator

    torch.manual_seed(0)
    sd = create_generator(arch).state_dict()
    if nan:  # a diverged training run: its weights hold NaN
        sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    p = folder / f"{arch}{'_nan' if nan else ''}.pth"
    torch.save(sd, p)
    return p


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "isp_search.cli", *map(str, args)], capture_output=True, text=True,
                          **kw)


@pytest.mark.slow  # one CLI export + evaluation + timing (~40 s)
def test_leaderboard_add_row_names_its_deployed_files_data_and_device(tmp_path, synth_root):
    from isp_search.export.pipeline import sha256
    from isp_search.export.tflite_export import interpreter

    lb = tmp_path / "lb.parquet"
    r = _cli("leaderboard", "--path", lb, "add", "--weights", _paper_sd(tmp_path), "--arch", "efficient_isp",
             "--deploy-size", "64x64", "--data", synth_root, "--backbone-weights", "random", "--runs", "2",
             "--out", tmp_path / "exp")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("added baseline/efficient_isp:") and "on mai2022 test (4 images)" in r.stdout
    row = LB.read(lb).to_pylist()[0]  # --path before `add` is honoured
    arts, digests, sizes = dict(row["artifacts"]), dict(row["sha256"]), dict(row["artifact_bytes"])
    timed = row["latency"][0]
    assert timed["model"] == arts["tflite"] and timed["sha256"] == digests["tflite"] == sha256(arts["tflite"])
    assert all(sizes[k] == os.path.getsize(v) for k, v in arts.items()) and set(arts) >= {"onnx", "tflite_fp16"}
    assert list(interpreter(arts["tflite"]).get_output_details()[0]["shape"]) == [1, 64, 64, 3]
    assert row["deploy_size"] == row["macs_size"] == timed["size"] == "64x64" and row["gate_size"] is None
    assert row["data_format"] == "mai2022" and row["data_root"] == str(synth_root.resolve())
    assert row["eval_split"] == "test" and row["n_test_images"] == 4 and len(row["data_fingerprint"]) == 16
    assert {(p["format"], p["kind"]) for p in row["parity"]} == {(f, k) for f in ("onnx", "tflite", "tflite_fp16")
                                                                  for k in ("random", "real")}
    assert row["parity_min_psnr_db"] > 45 and row["parity_max_lsb"] <= 2
    assert timed["target"] == "cpu" and timed["runtime"] == "litert-xnnpack" and timed["precision"] == "fp32"
    assert timed["host_cpu"] and timed["threads"] == 2 and timed["init_ms"] > 0 and timed["first_ms"] > 0
    assert row["latency_statistic"] == "median" and row["mai_score"] is None and row["mai_target"] is None
    # the same weights again, under another name: one line, no second row (keyed by the weights' content)
    again = _cli("leaderboard", "--path", lb, "add", "--weights", _paper_sd(tmp_path), "--arch", "efficient_isp",
                 "--deploy-size", "64x64", "--name", "baseline/copy", "--runs", "2", "--out", tmp_path / "exp2")
    assert again.returncode == 0 and again.stdout.strip().count("\n") == 0, again.stderr[-2000:]
    assert "not added" in again.stdout and "baseline/efficient_isp" in again.stdout
    assert LB.read(lb).num_rows == 1 and not (tmp_path / "exp2").exists()
    assert LB.read(lb).to_pylist()[0]["same_weights_as"] == ["baseline/copy"]  # the one row names both


@pytest.mark.slow  # a CLI export refused at its gates, then two CLI benches (~30 s)
def test_refused_model_gets_no_row_and_bench_refuses_its_folder(tmp_path, synth_root):
    lb = tmp_path / "lb.parquet"
    r = _cli("leaderboard", "add", "--weights", _paper_sd(tmp_path, nan=True), "--arch", "efficient_isp",
             "--deploy-size", "32x32", "--formats", "tflite", "--out", tmp_path / "exp", "--path", lb)  # --path after `add`
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and "not added: export refused: parity/" in r.stderr
    assert "weights have diverged" in r.stderr and not lb.exists()
    b = _cli("bench", tmp_path / "exp", "--runs", "1", "--warmup", "0")
    assert b.returncode == 2 and "refused by its gates" in b.stderr and "--force" in b.stderr
    forced = _cli("bench", tmp_path / "exp", "--runs", "1", "--warmup", "0", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]


class _DivergesAboveGateSize:
    """Builds a generator whose exported graph is off by 0.05 only at inputs wider than the gate export."""

    @staticmethod
    def build():
        import torch

        from isp_search.models import create_generator

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = create_generator("efficient_isp")

            def forward(self, x):
                y = self.inner(x)
                return y + 0.05 if torch.onnx.is_in_onnx_export() and x.shape[-1] > 40 else y

        return M().eval()


def test_model_refused_at_the_deployed_size_gets_no_row_though_its_gate_export_passed(tmp_path, synth_root):
    from pathlib import Path

    from isp_search.export.publish import publish
    from isp_search.export.settings import ExportSettings, Provenance
    from isp_search.models import spec_for
    from isp_search.models.checkpoint import LoadedGenerator

    loaded = LoadedGenerator(_DivergesAboveGateSize.build(), spec_for("efficient_isp"), "paper", Path("d"))
    lb = tmp_path / "lb.parquet"
    settings = ExportSettings(formats=("onnx",), deploy_size=(96, 96), gate_size=(64, 64))
    res = publish(loaded, tmp_path / "o", settings, Provenance(), data=(str(synth_root), "mai2022"),
                  metrics={"psnr": 30.0}, leaderboard_path=lb)
    assert (tmp_path / "o" / "gate_64x64" / "export.json").is_file()
    assert res.row is None and not res.export.passed and "parity/onnx/random" in res.export.reason
    assert not lb.exists() and not (tmp_path / "o" / "leaderboard_row.json").exists()


@pytest.mark.ray  # Ray's own Checkpoint and Result types (no cluster needed)
def test_search_export_path_gives_a_refused_trial_no_row(tmp_path, synth_root):
    from dataclasses import replace
    from pathlib import Path

    import torch
    from ray.train import Checkpoint, Result

    from isp_search.models import create_generator, spec_for
    from isp_search.models.checkpoint import save_generator
    from isp_search.search.context import StudyContext, base_train_config
    from isp_search.search.experiment import Experiment
    from isp_search.search.export_stage import publish_trial
    from isp_search.search.pareto import ParetoEntry
    from isp_search.search.space_file import load_space

    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    g = create_generator("efficient_isp")
    with torch.no_grad():
        g.conv1.weight[0, 0, 0, 0] = float("nan")
    save_generator(ckpt_dir / "last.pt", g, "efficient_isp", spec_for("efficient_isp").preset)
    space = load_space(Path(__file__).parents[1] / "search_spaces" / "smoke.yaml")
    space = replace(space, export=replace(space.export, gate_size=(32, 32), deploy_size=(32, 32), formats=("tflite",),
                                          results=str(tmp_path / "results")))
    ck = Checkpoint.from_directory(str(ckpt_dir))
    result = Result(metrics={"score": 1.0, "psnr": 20.0}, checkpoint=ck, error=None, path=str(tmp_path / "trial"),
                    best_checkpoints=[(ck, {"score": 1.0})])
    entry = ParetoEntry(0, "t0", {"lpips": 0.3, "psnr": 20.0}, {})
    cfg = replace(base_train_config(space), data=replace(base_train_config(space).data, root=synth_root))
    publish_trial(entry, result, StudyContext(space, cfg, Experiment("s", str(tmp_path), "s", str(tmp_path / "j"))))
    assert not entry.exported and entry.note.startswith("export refused: parity/")
    assert not (tmp_path / "results" / "leaderboard.parquet").exists()


def test_search_exports_spread_along_the_front():
    from isp_search.search.pareto import spread

    assert spread(7, 3) == [0, 3, 6] and spread(2, 3) == [0, 1] and spread(5, 1) == [0] and spread(4, 0) == []
