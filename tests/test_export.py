"""Real ONNX/TFLite conversions and interpreters: every backbone passes its gates at Full HD; broken exports are
refused naming the cause; a refused model never gets a leaderboard row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from isp_search.export import gates as G
from isp_search.export.pipeline import export_model, sha256
from isp_search.export.tflite_export import interpreter, op_list
from isp_search.models import GENERATORS, create_generator, spec_for
from isp_search.models.checkpoint import LoadedGenerator, save_generator

FULL_HD = (1088, 1920)
SMALL = (64, 64)


def _checkpoint(tmp_path, arch):
    torch.manual_seed(0)
    return save_generator(tmp_path / f"{arch}.pt", create_generator(arch), arch, spec_for(arch).preset)


def _paper_state_dict(folder: Path, arch: str) -> Path:
    """Random weights saved the way the authors published theirs: a bare state_dict, no metadata."""
    torch.manual_seed(0)
    p = folder / f"{arch}_paper.pth"
    torch.save(create_generator(arch).state_dict(), p)
    return p


@pytest.fixture(scope="module", params=GENERATORS.names())
def full_hd_export(request, tmp_path_factory, synth_root):
    """One Full-HD export per backbone (fp32 and fp16 TFLite, ONNX), shared by the tests below."""
    arch = request.param
    folder = tmp_path_factory.mktemp(f"fullhd_{arch}")
    res = export_model(_paper_state_dict(folder, arch), folder / "out", ["onnx", "tflite", "tflite_fp16"], FULL_HD,
                       calib=(str(synth_root), "mai2022"), arch=arch)
    return arch, res, folder / "out"


@pytest.mark.slow  # ~40-90 s per backbone on 2 cores: the MAI deployment size, as users export
def test_paper_state_dict_exports_at_full_hd_and_passes_every_gate(full_hd_export):
    arch, res, out = full_hd_export
    assert res.passed, res.reason
    doc = json.loads((out / "export.json").read_text())
    for fmt in ("onnx", "tflite", "tflite_fp16"):
        lim = G.PARITY_LIMITS[fmt]
        for kind in ("random", "real"):
            g = doc["gates"][f"parity/{fmt}/{kind}"]
            assert g["passed"] and g["psnr_db"] >= lim.min_psnr_db and g["max_lsb"] <= lim.max_lsb, (fmt, kind, g)
    for fmt in ("tflite", "tflite_fp16"):
        assert doc["gates"][f"ops/{fmt}"]["passed"] and doc["gates"][f"gpu_analyzer/{fmt}"]["passed"]
        assert "compatible with GPU delegate" in Path(doc["gates"][f"gpu_analyzer/{fmt}"]["report"]).read_text()
        assert res.sha256[fmt] == sha256(res.paths[fmt]) and res.bytes[fmt] == Path(res.paths[fmt]).stat().st_size
    assert doc["preset"] == spec_for(arch).preset and doc["gates"]["preset"]["passed"]
    assert doc["real_data"]["split"] == "test" and doc["real_data"]["n_images"] == 4
    it = interpreter(res.paths["tflite"])
    inp, outp = it.get_input_details()[0]["shape"], it.get_output_details()[0]["shape"]
    packed = spec_for(arch).input_layout == "packed"
    assert list(inp) == ([1, 544, 960, 4] if packed else [1, 1088, 1920, 3])
    assert list(outp) == [1, 1088, 1920, 3]
    if arch == "efficient_isp":  # the DCR fold leaves a pure conv graph
        assert op_list(res.paths["tflite"]) == ["CONV_2D", "TANH", "CONV_2D", "CONV_2D", "DEPTH_TO_SPACE"]


def test_parity_gate_judges_in_image_terms():
    ref = np.full((1, 8, 8, 3), 0.5, np.float32)
    assert G.parity_gate("tflite", "random", ref, ref + 3.6e-3).passed  # RMFA's fp32 MEAN at Full HD: 0.9 LSB
    assert not G.parity_gate("tflite", "random", ref, ref + 3 / 255).passed  # 3 LSB everywhere
    m = G.image_error(ref, ref + 1 / 255)
    assert m["max_lsb"] == pytest.approx(1.0) and m["psnr_db"] == pytest.approx(20 * np.log10(255), abs=1e-3)
    assert G.image_error(ref, ref + 2.0)["max_lsb"] == pytest.approx(127.5)  # outputs are clamped as deployed
    nan = G.parity_gate("onnx", "real", ref, ref * np.nan)
    assert not nan.passed and "NaN" in nan.detail
    assert not G.parity_gate("onnx", "real", ref, ref[:, :2]).passed


class _SwapsInputChannels(torch.nn.Module):
    """An export that reads its packed planes in the reverse order (e.g. RGGB instead of B, Gb, R, Gr)."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = create_generator(arch)

    def forward(self, x):
        return self.inner(x.flip(1) if torch.onnx.is_in_onnx_export() else x)


@pytest.mark.parametrize("arch", ["efficient_isp", "rmfa_tiny"])
def test_wrong_channel_order_is_refused_and_located_at_the_first_layer(tmp_path, synth_root, arch):
    loaded = LoadedGenerator(_SwapsInputChannels(arch).eval(), spec_for(arch), spec_for(arch).preset, Path("x"))
    res = export_model(loaded, tmp_path / "o", ["onnx"], SMALL, calib=(str(synth_root), "mai2022"))
    assert not res.passed and "parity/onnx/random" in res.reason
    assert "first layer already differs" in res.reason and "channel order" in res.reason
    located = json.loads((tmp_path / "o" / "export.json").read_text())["gates"]["parity/onnx/random"]["located"]
    first = located["first_bad_op"]
    assert first["closest_pytorch"] == ("inner.conv1" if arch == "efficient_isp" else "inner.input_module.0")
    assert first["rel_error"] > 0.05


def test_unfolded_crd_shuffle_is_refused_naming_the_fold(tmp_path, synth_root):
    res = export_model(_checkpoint(tmp_path, "efficient_isp"), tmp_path / "o", ["tflite"], SMALL,
                       calib=(str(synth_root), "mai2022"), fold_dcr=False)
    assert not res.passed
    assert res.reason.startswith("ops/tflite: not for a mobile GPU") and "not folded into DCR" in res.reason
    assert res.gates["parity/tflite/random"]["passed"]  # the numbers are right; the graph is not for a GPU


def test_wrong_preset_is_refused_naming_both_presets(tmp_path, synth_root):
    res = export_model(_checkpoint(tmp_path, "efficient_isp"), tmp_path / "o", ["onnx"], SMALL,
                       calib=(str(synth_root), "mai2022"), preset="pynet")
    assert not res.passed and res.reason.startswith("preset: input normalisation 'pynet'")
    assert "trained with 'paper'" in res.reason and res.gates["preset"]["psnr_db"] < 60


def test_int8_is_judged_on_images_it_was_not_calibrated_on(tmp_path, synth_root):
    res = export_model(_checkpoint(tmp_path, "robust_isp"), tmp_path / "o", ["tflite_int8"], SMALL,
                       calib=(str(synth_root), "mai2022"))
    assert res.passed  # int8 is reported, never gating
    doc = json.loads((tmp_path / "o" / "export.json").read_text())
    cal, held = doc["int8_calibration"], doc["real_data"]
    assert cal["split"] == "train" and held["split"] == "test" and cal["fingerprint"] != held["fingerprint"]
    g = doc["gates"]["parity/tflite_int8/real"]
    assert not g["blocking"] and 20 < g["psnr_db"] < 100 and isinstance(g["quality_drop_db"], float)
    assert "QUANTIZE" in op_list(res.paths["tflite_int8"])


@pytest.mark.slow  # a CLI export to ONNX + TFLite in a fresh process (~35 s on 2 cores)
def test_cli_exports_paper_state_dict_with_arch(tmp_path, synth_root):
    sd = tmp_path / "paper_robust.pth"
    torch.save(create_generator("robust_isp").state_dict(), sd)
    cmd = [sys.executable, "-m", "isp_search.cli", "export", str(sd), "--arch", "robust_isp", "--out",
           str(tmp_path / "o"), "--formats", "onnx,tflite", "--size", "32x32", "--calib-data", str(synth_root)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "model.onnx").is_file() and (tmp_path / "o" / "model_fp32.tflite").is_file()
    assert "ok   parity/tflite/real: PSNR" in r.stdout
    bad = subprocess.run(cmd[:5] + ["--arch", "rmfa_tiny"] + cmd[7:], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not fit 'rmfa_tiny'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_export_help_and_default_formats_agree():
    from isp_search.cli import build_parser

    p = build_parser()
    args = p.parse_args(["export", "x.pt", "--out", "o"])
    assert args.formats.split(",") == ["onnx", "tflite", "tflite_fp16", "tflite_int8"]
