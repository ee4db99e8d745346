"""Mobile-GPU latency from a device cloud: a Qualcomm AI Hub profile job of the ``.tflite`` on a named phone.

Uses the official ``qai-hub`` client (optional extra ``pip install 'isp-search[qaihub]'``: it needs protobuf
<= 6.31.1, TensorFlow 2.21 / onnx 1.23 need >= 6.31.1 and other packages here want newer, so it is not in the
base install). The job runs with the GPU compute unit (``--compute_unit gpu``); the row records the device,
its chipset, how many layers ran on GPU/NPU/CPU, and the timings the profile reports (microseconds -> ms).
Only the parts that need no network are tested here (argument handling, the missing-token error, turning a
profile into a latency entry with the client's own protobuf types).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import requests

from isp_search.errors import UserError

INSTALL_HINT = "pip install 'qai-hub==0.56.0' 'protobuf==6.31.1' (or the isp-search[qaihub] extra)"
TOKEN_HINT = ("run `qai-hub configure --api_token TOKEN` (token from https://aihub.qualcomm.com, Settings) "
              "or point QAIHUB_CLIENT_INI at a client.ini")


def parse_target(target: str) -> str:
    """``qai-hub:DEVICE`` -> the device name, e.g. ``qai-hub:Samsung Galaxy S24`` -> ``Samsung Galaxy S24``."""
    if not target.startswith("qai-hub:") or not target.split(":", 1)[1].strip():
        raise UserError(f"--target {target!r}: expected qai-hub:DEVICE, e.g. 'qai-hub:Samsung Galaxy S24' "
                        "(names: `qai-hub list-devices`)")
    return target.split(":", 1)[1].strip()


def _client():
    try:
        # deferred: qai-hub is an optional extra (pip install isp-search[qaihub])
        import qai_hub
    except ImportError:
        raise UserError(f"--target qai-hub: the qai-hub client is not installed; {INSTALL_HINT}") from None
    return qai_hub


def check_token() -> None:
    """Fail before the export when no API token is configured (the client reads ~/.qai_hub/client.ini)."""
    hub = _client()
    # deferred: qai-hub is an optional extra (pip install isp-search[qaihub])
    from qai_hub import api_utils

    path = Path(api_utils.get_config_path())
    if not path.is_file():
        raise UserError(f"--target qai-hub: no API token configured ({path} not found); {TOKEN_HINT}")
    del hub


def profile_to_latency(profile: dict, device: str, chipset: str | None, size: str, model: str) -> dict:
    """A latency entry from a profile dict as ``ProfileJob.download_profile()`` returns it."""
    summary = profile.get("execution_summary", {})
    layers = profile.get("execution_detail", [])
    units: dict[str, int] = {}
    for layer in layers:
        units[layer["compute_unit"]] = units.get(layer["compute_unit"], 0) + 1
    runs_us = [t for t in summary.get("all_inference_times") or [] if t]
    est = summary.get("estimated_inference_time")
    gpu = units.get("GPU", 0)
    entry = {
        "target": f"qai-hub:{device}", "runtime": "tflite (Qualcomm AI Hub)", "device": device, "soc": chipset,
        "delegate": "gpu" if gpu and gpu == len(layers) else f"gpu (partial: {gpu}/{len(layers)} layers)",
        "precision": "fp16" if "fp16" in Path(model).name else "fp32 (GPU may compute in fp16)",
        "compute_units": ", ".join(f"{k}: {v}" for k, v in sorted(units.items())) or None,
        "delegated_nodes": f"{gpu}/{len(layers)}" if layers else None,
        "fully_delegated": bool(layers) and gpu == len(layers), "threads": None, "size": size, "model": model,
        "init_ms": _ms(summary.get("first_load_time")), "first_ms": None,
        "runs": len(runs_us) or None, "mobile": True,
    }
    if runs_us:
        a = np.asarray(runs_us, dtype=float) / 1e3
        entry.update(median_ms=float(np.median(a)), p10_ms=float(np.percentile(a, 10)),
                     p90_ms=float(np.percentile(a, 90)), mean_ms=float(a.mean()), std_ms=float(a.std()),
                     min_ms=float(a.min()), max_ms=float(a.max()), statistic="median")
    else:  # older profiles carry only AI Hub's estimate (its own per-run minimum): say so
        entry.update(median_ms=None, mean_ms=_ms(est), statistic="estimate")
    return entry


def _ms(us) -> float | None:
    return None if us is None or isinstance(us, (tuple, list)) or not us else float(us) / 1e3


def bench_qaihub(model: str | os.PathLike, device: str, size: str, poll_s: float = 15.0) -> dict:
    """Submit a profile job of ``model`` on ``device`` with the GPU compute unit, wait, return a latency entry."""
    hub = _client()
    check_token()
    try:
        job = hub.submit_profile_job(model=str(model), device=hub.Device(device), options="--compute_unit gpu",
                                     name=f"isp-search {Path(model).name}")
        chipset = next((a.split(":", 1)[1] for a in (job.device.attributes or []) if a.startswith("chipset:")), None)
        t0 = time.monotonic()
        while True:
            st = job.get_status()
            if st.finished:
                break
            print(f"qai-hub: job {job.job_id} on {device}: {st.code.lower()} ({time.monotonic() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
            time.sleep(poll_s)
        if not st.success:
            raise UserError(f"qai-hub: profile job {job.job_id} on {device} failed: {st.message or st.code}")
        profile = job.download_profile()
    except UserError:
        raise
    except hub.client.UserError as e:  # the client's own: no token, unknown device, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = TOKEN_HINT if "configuration" in str(e).lower() or "token" in str(e).lower() else \
            "see `qai-hub list-devices` for device names"
        raise UserError(f"qai-hub: {first}; {hint}") from None
    except Exception as e:  # network, proxy, server: one line, not a traceback

        if isinstance(e, requests.exceptions.RequestException):
            raise UserError(f"qai-hub: cannot reach Qualcomm AI Hub ({type(e).__name__}); check the network "
                            "or proxy (HTTPS_PROXY) and retry") from None
        raise
    entry = profile_to_latency(profile, device, chipset, size, str(model))
    entry["job_id"] = job.job_id
    return entry
