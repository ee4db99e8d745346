"""The compute floor: MACs counted from the timed .tflite graph agree with PyTorch's count, the SGEMM peak is a
real measurement, and the floor is 2 x MACs / peak."""

from __future__ import annotations

import pytest
import torch

from isp_search.export.floor import floor_ms, peak_gflops, tflite_macs
from isp_search.export.onnx_export import export_onnx
from isp_search.export.publish import count_macs
from isp_search.export.tflite_export import convert
from isp_search.models import create_generator, spec_for


@pytest.mark.parametrize("arch", ["rmfa_tiny"])  # 3x3 and 1x1 convolutions, the attention's squeeze-excite
def test_tflite_macs_match_the_pytorch_count(tmp_path, arch):
    torch.manual_seed(0)
    model, spec = create_generator(arch), spec_for(arch)
    export_onnx(model, spec, tmp_path / "m.onnx", 32, 48)
    tfl = convert(tmp_path / "m.onnx", tmp_path)["tflite"]
    assert tflite_macs(tfl) == count_macs(model, spec, 32, 48) > 0


def test_floor_is_two_flops_per_mac_at_the_measured_peak():
    # Efficient ISP, Full HD (docs/method.md §8)
    assert floor_ms(1_579_253_760, 226.0) == pytest.approx(13.976, abs=1e-3)
    peak = peak_gflops(threads=1, n=512, repeats=2)
    assert peak["threads"] == 1 and 0.5 < peak["gflops"] < 1000 and "SGEMM 512x512x512" in peak["method"]
