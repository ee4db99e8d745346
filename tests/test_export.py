"""Real ONNX/TFLite conversions and interpreters: every backbone passes its gates; broken exports are refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from isp_search.export import gates as G
from isp_search.export.onnx_export import dcr_permutation, export_onnx, fold_crd_to_dcr
from isp_search.export.pipeline import export_model
from isp_search.export.tflite_export import convert, interpreter, op_list, run_tflite
from isp_search.models import GENERATORS, create_generator, spec_for
from isp_search.models.checkpoint import save_generator

SIZE = (32, 48)


def _checkpoint(tmp_path, arch):
    torch.manual_seed(0)
    return save_generator(tmp_path / f"{arch}.pt", create_generator(arch), arch, spec_for(arch).preset)


@pytest.mark.parametrize("arch", GENERATORS.names())
def test_backbone_exports_and_passes_gates(tmp_path, arch, synth_root):
    res = export_model(_checkpoint(tmp_path, arch), tmp_path / "out", ["onnx", "tflite", "tflite_fp16"], SIZE,
                       calib=(str(synth_root), "mai2022"))
    assert res.passed, res.reason
    doc = json.loads((tmp_path / "out" / "export.json").read_text())
    for fmt, limit in (("onnx", 1e-5), ("tflite", 1e-4), ("tflite_fp16", 5e-3)):
        for kind in ("random", "real"):
            g = doc["gates"][f"parity/{fmt}/{kind}"]
            assert g["passed"] and g["value"] <= limit
    assert doc["preset"] == spec_for(arch).preset
    it = interpreter(res.paths["tflite"])
    inp, out = it.get_input_details()[0]["shape"], it.get_output_details()[0]["shape"]
    c = 4 if spec_for(arch).input_layout == "packed" else 3
    scale = 2 if c == 4 else 1
    assert list(inp) == [1, SIZE[0] // scale, SIZE[1] // scale, c]
    assert list(out) == [1, *SIZE, 3]
    assert len(doc["sha256"]["tflite"]) == 64


def test_efficient_isp_graph_is_minimal(tmp_path):
    res = export_model(_checkpoint(tmp_path, "efficient_isp"), tmp_path / "o", ["tflite"], SIZE)
    assert op_list(res.paths["tflite"]) == ["CONV_2D", "TANH", "CONV_2D", "CONV_2D", "DEPTH_TO_SPACE"]


def test_int8_runs_and_is_reported(tmp_path, synth_root):
    res = export_model(_checkpoint(tmp_path, "robust_isp"), tmp_path / "o", ["tflite_int8"], SIZE,
                       calib=(str(synth_root), "mai2022"))
    assert res.passed
    err = res.gates["parity/tflite_int8/real"]["value"]
    assert 0 < err < 0.1 and res.gates["parity/tflite_int8/real"]["limit"] is None
    assert "QUANTIZE" in op_list(res.paths["tflite_int8"])


def test_dcr_fold_is_exact_and_crd_graph_is_refused(tmp_path):
    model, spec = create_generator("efficient_isp").eval(), spec_for("efficient_isp")
    # the permutation moves channel c*4 + by*2 + bx to (by*2 + bx)*C + c
    perm = dcr_permutation(12)
    assert perm[:3].tolist() == [0, 4, 8] and perm[3] == 1
    export_onnx(model, spec, tmp_path / "crd.onnx", *SIZE, fold_dcr=False)
    proto = onnx.load(tmp_path / "crd.onnx")
    assert fold_crd_to_dcr(proto) == 1
    # without the fold the converter needs extra ops that a mobile GPU runs badly: the gate refuses it
    paths = convert(tmp_path / "crd.onnx", tmp_path / "crd")
    ops = op_list(paths["tflite"])
    gate = G.op_gate("tflite", ops, {})
    assert not gate.passed and ("TRANSPOSE" in gate.detail or "GATHER" in gate.detail or "RESHAPE" in gate.detail)
    x = torch.rand(1, 4, SIZE[0] // 2, SIZE[1] // 2)
    y = run_tflite(interpreter(paths["tflite"]), x.permute(0, 2, 3, 1).numpy())
    assert np.abs(y - model(x).detach().permute(0, 2, 3, 1).numpy()).max() < 1e-4  # correct, but slow ops


def test_parity_gate_refuses_a_corrupted_export(tmp_path):
    ref = np.zeros((1, 4, 4, 3), np.float32)
    bad = ref.copy()
    bad[0, 0, 0, 0] = 1e-3
    assert not G.parity_gate("tflite", "random", ref, bad).passed
    assert G.parity_gate("tflite", "random", ref, ref + 1e-6).passed
    assert not G.parity_gate("onnx", "real", ref, ref[:, :2]).passed


def test_cli_exports_paper_state_dict_with_arch(tmp_path):
    sd = tmp_path / "paper_robust.pth"
    torch.save(create_generator("robust_isp").state_dict(), sd)
    cmd = [sys.executable, "-m", "isp_search.cli", "export", str(sd), "--arch", "robust_isp", "--out",
           str(tmp_path / "o"), "--formats", "onnx,tflite", "--size", "32x32"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "model.onnx").is_file() and (tmp_path / "o" / "model_fp32.tflite").is_file()
    bad = subprocess.run(cmd[:5] + ["--arch", "rmfa_tiny"] + cmd[7:], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not fit 'rmfa_tiny'" in bad.stderr
    assert "Traceback" not in bad.stderr


class _DivergesWhenExported(torch.nn.Module):
    """A generator whose exported graph differs from PyTorch by 1e-3: above the ONNX/TFLite fp32 limits."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = create_generator("efficient_isp")

    def forward(self, x):
        y = self.inner(x)
        return y + 1e-3 if torch.onnx.is_in_onnx_export() else y


def test_export_diverging_from_pytorch_is_refused_and_never_reaches_the_leaderboard(tmp_path, synth_root):
    from pathlib import Path

    from isp_search.export.publish import publish
    from isp_search.models.checkpoint import LoadedGenerator

    loaded = LoadedGenerator(_DivergesWhenExported().eval(), spec_for("efficient_isp"), "paper", Path("broken"))
    lb = tmp_path / "lb.parquet"
    res = publish(loaded, tmp_path / "o", formats=("onnx", "tflite"), export_size=SIZE, bench_size=None,
                  data=(str(synth_root), "mai2022"), metrics={"psnr": 30.0}, leaderboard_path=lb)
    assert res.row is None and not res.export.passed
    assert "parity/onnx/random" in res.export.reason and "parity/tflite/real" in res.export.reason
    doc = json.loads((tmp_path / "o" / "export.json").read_text())
    assert doc["passed"] is False and doc["reason"] == res.export.reason
    assert 9e-4 < doc["gates"]["parity/onnx/random"]["value"] < 1.1e-3
    assert not lb.exists()
