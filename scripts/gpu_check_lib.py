"""The checks of ``scripts/gpu-check`` (one function per check, each returning its JSON record)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper" / "efficient_isp_unpaired_mai2022.yaml"
BIN = Path(sys.executable).parent


def check_device(cuda: bool) -> dict[str, Any]:
    import torch

    from isp_search.train.loop import pick_device

    rec: dict[str, Any] = {"check": "device", "torch": torch.__version__, "cuda": torch.version.cuda,
                           "auto_device": str(pick_device("auto")), "cpu_cores": len(os.sched_getaffinity(0))}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        rec.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported())
    rec["ok"] = rec["auto_device"] == ("cuda" if cuda else "cpu")
    return rec


def make_data(root: Path, size: dict) -> Path:
    """``scenes`` synthetic scenes, hard-linked up to ``items`` train pairs (the real MAI 2022 layout)."""
    from isp_search.data.synth import synthesize

    if (root / "train").is_dir():
        return root
    synthesize(root, "mai2022", n_train=size["scenes"], n_val=4, n_test=4, size=size["image"], seed=0)
    for sub in ("mediatek_raw", "fujifilm"):
        folder = root / "train" / sub
        for i in range(size["scenes"], size["items"]):
            os.link(folder / f"{i % size['scenes']}.png", folder / f"{i}.png")
    return root


def train_config(work: Path, data: Path, size: dict, workers: int, extra: list[str], name: str = "step"):
    """The paper's unpaired config on the synthetic set, random frozen weights, amp + channels_last."""
    import yaml

    from isp_search.configio import to_dict
    from isp_search.train import load_train_config

    sets = [f"data.root={data}", "data.n_val=4", "data.n_test=4", f"data.workers={workers}", "data.packed=true",
            "data.eval_limit=4", f"data.patch_size={size['patch'] if size['patch'] != size['image'] else 'null'}",
            "backbone_weights=random", "model.allow_scratch=true", "train.amp=true", "train.channels_last=true",
            "train.device=auto", f"train.batch_size={size['batch']}", f"train.steps={size['steps']}",
            f"train.eval_interval={size['steps']}", f"train.log_interval={size['steps']}", "train.progress=false",
            f"features.vit_img_size={size['vit']}", *extra]
    cfg = load_train_config(PAPER, sets)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return cfg, path


class ConvWatch:
    """A global forward hook on Conv2d: output dtype and memory format per owner (generator, frozen, other)."""

    def __init__(self, gen_type: type, limit: int = 400) -> None:
        import torch

        self.torch, self.gen_type, self.limit = torch, gen_type, limit
        self.depth, self.seen = 0, Counter()
        self._pre = torch.nn.modules.module.register_module_forward_pre_hook(self._enter)
        self._post = torch.nn.modules.module.register_module_forward_hook(self._leave)

    def _enter(self, module, args):
        if isinstance(module, self.gen_type):
            self.depth += 1

    def _leave(self, module, args, out):
        if isinstance(module, self.gen_type):
            self.depth -= 1
        if isinstance(module, self.torch.nn.Conv2d) and sum(self.seen.values()) < self.limit:
            from isp_search.train import step

            frozen = any(module is m for net in step._NET_CACHE.values() for m in net.modules())
            owner = "generator" if self.depth > 0 else ("frozen" if frozen else "other")
            cl = out.dim() == 4 and out.is_contiguous(memory_format=self.torch.channels_last) and out.shape[1] > 1 \
                and out.shape[-1] * out.shape[-2] > 1
            self.seen[(owner, str(out.dtype).removeprefix("torch."), "channels_last" if cl else "nchw")] += 1

    def close(self) -> dict[str, dict[str, int]]:
        self._pre.remove()
        self._post.remove()
        out: dict[str, dict[str, int]] = {}
        for (owner, dtype, fmt), n in sorted(self.seen.items()):
            out.setdefault(owner, {})[f"{dtype}/{fmt}"] = n
        return out


def check_step(work: Path, data: Path, size: dict, workers: int, extra: list[str]) -> dict[str, Any]:
    import torch

    from isp_search.models.registry import spec_for
    from isp_search.train import train

    cfg, _ = train_config(work, data, size, workers, extra)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    watch = ConvWatch(type(spec_for(cfg.model.arch).build()))
    try:
        summary = train(cfg, work / "step_run")
    finally:
        convs = watch.close()
    run = json.loads((work / "step_run" / "run.json").read_text())
    steps = summary["step"]
    busy = steps / summary["steps_per_s"] if summary["steps_per_s"] else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gen = convs.get("generator", {})
    frozen = convs.get("frozen", {})
    rec = {
        "check": "step", "device": run["device"], "amp": cfg.train.amp, "channels_last": cfg.train.channels_last,
        "batch_size": cfg.train.batch_size, "patch": size["patch"], "workers": workers, "steps": steps,
        "status": summary["status"], "steps_per_s": summary["steps_per_s"],
        "items_per_s": summary["steps_per_s"] * cfg.train.batch_size,
        "data_wait_share": summary["data_wait_s"] / busy if busy else None,
        "peak_memory_gib": round(peak, 2), "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "conv_outputs": convs, "run_dir": str(work / "step_run"),
        "generator_bf16": bool(gen) and all(k.startswith("bfloat16") for k in gen),
        "frozen_bf16": bool(frozen) and all(k.startswith("bfloat16") for k in frozen),
        "channels_last_seen": any(k.endswith("channels_last") for d in convs.values() for k in d),
        "note": "steps_per_s includes the first (warm-up) step; the loader restarts its workers each epoch",
    }
    expect_cuda = rec["device"].startswith("cuda") == cuda
    rec["ok"] = summary["status"] == "completed" and expect_cuda and (
        not cuda or (rec["frozen_bf16"] and rec["channels_last_seen"]))
    return rec


def _cli(argv: list[str]) -> tuple[int, str]:
    """``isp-search ARGV`` in this process, stdout captured (the command's own code path, no new interpreter)."""
    from isp_search.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def check_bench_train(work: Path, reduced: bool) -> dict[str, Any]:
    rc, out = _cli(["bench-train", str(work / "step.yaml"), "--steps", "1" if reduced else "5", "--json"])
    res = json.loads(out.strip().splitlines()[-1])
    return {"check": "bench_train", "ok": rc == 0, **res}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    """A Ray head on loopback with its own ports and temp dir; ``stop()`` ends exactly its processes, by pid."""

    def __init__(self, cpus: int, gpus: int, env: dict[str, str]) -> None:
        self.tmp = Path(os.path.realpath("/tmp")) / f"gc{os.getpid()}"  # short: Ray's socket paths must stay < 108
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        r = subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                            f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--temp-dir={self.tmp}",
                            "--include-dashboard=false", "--disable-usage-stats",
                            f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}"],
                           env=env, capture_output=True, text=True, timeout=180, start_new_session=True, check=False)
        if r.returncode:
            self.stop()
            raise RuntimeError(f"ray start failed: {(r.stdout + r.stderr)[-1500:]}")

    def stop(self) -> None:
        import psutil

        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = []
            for proc in psutil.process_iter(["cmdline"]):
                try:
                    if any(str(self.tmp) in a or self.address in a for a in proc.info["cmdline"] or ()):
                        procs.append(proc)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(sig)
            psutil.wait_procs(procs, timeout=10)
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def check_search(work: Path, data: Path, size: dict, cuda: bool) -> dict[str, Any]:
    small = dict(size, batch=min(size["batch"], 8), patch=min(size["patch"], 128), steps=min(size["steps"], 20))
    _, base = train_config(work, data, small, 1, [], name="trial")
    res = "{cpu: 1, gpu: 0.5}" if cuda else "{cpu: 1, gpu: 0}"
    space = work / "space.yaml"
    space.write_text(f"""name: gpucheck
base: {{config: {base}}}
space:
  optim.g_lr: {{type: float, low: 1.0e-4, high: 1.0e-3, log: true}}
objectives: [{{metric: lpips, direction: min}}, {{metric: psnr, direction: max}}]
search: {{sampler: random, seed: 0, num_samples: 2, max_concurrent: 2, max_failures: 0}}
scheduler: {{type: none}}
confirm: {{seeds: 0}}
resources: {res}
storage: {{path: {work / 'search'}}}
export: {{top_k: 0, results: {work / 'results'}}}
""")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),  # our own token: no ~/.ray file
           "RAY_memory_monitor_refresh_ms": "0"}  # tiny trials: never OOM-killed for what others use on the host
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    head = RayHead(4 if cuda else 2, 1 if cuda else 0, env)
    log = work / "search.log"
    try:
        with open(log, "w") as f:
            r = subprocess.run([sys.executable, "-m", "isp_search.cli", "search", str(space), "--name", "gc",
                                "--address", head.address], env=env, stdout=f, stderr=subprocess.STDOUT,
                               timeout=420, cwd=work, check=False)
    finally:
        head.stop()
    windows, devices = [], []
    for result in sorted((work / "search" / "gc").glob("trial_*/result.json")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        run_dir = next((Path(x["run_dir"]) for x in rows if x.get("run_dir")), None)
        if run_dir is None or not (run_dir / "summary.json").is_file():
            continue
        start, end = (run_dir / "config.yaml").stat().st_mtime, (run_dir / "summary.json").stat().st_mtime
        windows.append((start, end))
        devices.append(json.loads((run_dir / "run.json").read_text())["device"])
    overlap = len(windows) == 2 and max(w[0] for w in windows) < min(w[1] for w in windows)
    rec = {"check": "search", "returncode": r.returncode, "resources": res, "trials_completed": len(windows),
           "trial_devices": devices, "concurrent": overlap,
           "trial_windows_s": [[round(a - windows[0][0], 1), round(b - windows[0][0], 1)] for a, b in windows]}
    rec["ok"] = r.returncode == 0 and overlap and all(d.startswith("cuda" if cuda else "cpu") for d in devices)
    if not rec["ok"]:
        rec["log_tail"] = log.read_text()[-3000:]
    return rec


def check_export(work: Path, run_dir: Path, data: Path, reduced: bool) -> dict[str, Any]:
    out = work / "export"
    rc, text = _cli(["export", str(run_dir), "--out", str(out), "--formats", "onnx" if reduced else "onnx,tflite",
                     "--size", "64x64" if reduced else "256x256", "--calib-data", str(data), "--json"])
    res = json.loads(text[text.index("{"):])
    files = {k: Path(v).stat().st_size for k, v in res.get("artifacts", {}).items() if Path(v).is_file()}
    return {"check": "export", "ok": rc == 0 and bool(res.get("passed")) and bool(files), "passed": res.get("passed"),
            "reason": res.get("reason"), "artifact_bytes": files,
            "gates": {k: g.get("value") for k, g in res.get("gates", {}).items()}}

