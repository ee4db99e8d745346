"""Qualcomm AI Hub latency (--target qai-hub:DEVICE): target arguments, a missing client or token as one line,
and a downloaded profile turned into a leaderboard latency entry."""

from __future__ import annotations

import pytest
from clirun import run_cli

from isp_search.export import leaderboard as LB


def test_qai_hub_target_arguments_and_missing_client_or_token(tmp_path, monkeypatch, capsys):
    from isp_search.errors import UserError
    from isp_search.export.qaihub import parse_target

    assert parse_target("qai-hub:Samsung Galaxy S24") == "Samsung Galaxy S24"
    with pytest.raises(UserError, match="expected qai-hub:DEVICE"):
        parse_target("qai-hub:")
    model = tmp_path / "model_fp16.tflite"
    model.write_bytes(b"TFL3")
    with monkeypatch.context() as m:
        m.setenv("QAIHUB_CLIENT_INI", str(tmp_path / "none.ini"))
        m.setenv("HOME", str(tmp_path))
        code, _, err = run_cli(capsys, "bench", model, "--target", "qai-hub:Samsung Galaxy S24")
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in err
    try:
        import qai_hub  # noqa: F401  (optional extra)
    except ImportError:
        assert "qai-hub client is not installed" in err and "pip install" in err
    else:
        assert "no API token configured" in err and "qai-hub configure --api_token" in err
    code, _, err = run_cli(capsys, "bench", model, "--target", "phone")
    assert code == 2 and "qai-hub:DEVICE" in err


# download_profile()'s dict for a TFLite job on a GPU that took 3 of 4 layers (AI Hub's documented keys).
_PROFILE = {"execution_summary": {"estimated_inference_time": 31800, "first_load_time": 215000,
                                  "warm_load_time": 41000, "all_inference_times": [32100, 31800, 31950, 33000]},
            "execution_detail": [{"name": "conv1", "type": "CONV_2D", "compute_unit": "GPU"},
                                 {"name": "tanh", "type": "TANH", "compute_unit": "GPU"},
                                 {"name": "conv2", "type": "CONV_2D", "compute_unit": "GPU"},
                                 {"name": "d2s", "type": "DEPTH_TO_SPACE", "compute_unit": "CPU"}]}


def test_qai_hub_profile_becomes_a_latency_entry():
    from isp_search.export.qaihub import profile_to_latency

    e = profile_to_latency(_PROFILE, "Samsung Galaxy S24", "qualcomm-snapdragon-8gen3", "1088x1920",
                           "/x/model_fp16.tflite")
    assert e["target"] == "qai-hub:Samsung Galaxy S24" and e["soc"] == "qualcomm-snapdragon-8gen3"
    assert e["median_ms"] == pytest.approx(32.025) and e["statistic"] == "median" and e["runs"] == 4
    assert e["compute_units"] == "CPU: 1, GPU: 3" and e["fully_delegated"] is False
    assert e["delegate"] == "gpu (partial: 3/4 layers)" and e["init_ms"] == pytest.approx(215.0)
    assert e["precision"] == "fp16" and set(e) <= set(LB.LATENCY.names) | {"mobile"}


def test_qai_hub_profile_from_the_clients_own_protobuf_types():
    pb = pytest.importorskip("qai_hub.public_api_pb2", reason="qai-hub is an optional extra (isp-search[qaihub])")
    from qai_hub.client import _profile_pb_to_python_dict

    from isp_search.export.qaihub import profile_to_latency

    detail = pb.ProfileDetail(major_version=1, minor_version=2, execution_time=31800, cold_load_time=215000)
    detail.all_execution_times.extend([32100, 31800, 31950, 33000])
    for name, unit in (("conv1", pb.COMPUTE_UNIT_GPU), ("d2s", pb.COMPUTE_UNIT_GPU)):
        detail.layer_details.add(name=name, layer_type_name="CONV_2D", compute_unit=unit)
    e = profile_to_latency(_profile_pb_to_python_dict(detail), "Samsung Galaxy S24", None, "1088x1920", "m_fp16.tflite")
    assert e["median_ms"] == pytest.approx(32.025) and e["fully_delegated"] is True and e["delegate"] == "gpu"
