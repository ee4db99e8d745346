"""A real local Ray cluster for tests: a head on its own ports and temp dir, extra nodes joined with
``ray start --address``, everything stopped by pid (never a bare ``ray stop``).

Import from a test module: ``from raycluster import ENV, Head, running_head``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1",
       "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
ENV.pop("RAY_ADDRESS", None)
# token auth, as on a real cluster (docs/method.md §10); our own token, so no file in ~/.ray is read or written
ENV.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
ENV.pop("RAY_AUTH_TOKEN_PATH", None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_under(marker: str) -> list[psutil.Process]:
    """Processes whose command line names ``marker`` (our temp dir or port): exactly the ones we started."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in a for a in p.info["cmdline"] or ()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def kill_tree(procs: list[psutil.Process], sig: int = signal.SIGKILL) -> None:
    everything = _with_children(procs)
    _signal(everything, sig)
    psutil.wait_procs(everything, timeout=10)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WORKER = re.compile(r"^\((?:[\w.]+ )?pid=[^)]*\) ?")


def tracebacks(log: str) -> list[str]:
    """The Python tracebacks in a job or driver log, each as one block of text, leaving out exactly one kind:
    Ray's own teardown of a finished worker. At the end of a job the raylet SIGTERMs the job's workers; Ray's
    handler (``ray/_private/worker.py``, ``sigterm_handler``) raises ``SystemExit``, and when that lands inside a
    weakref callback Python prints ``Exception ignored in ...`` with a traceback and carries on until the raylet's
    SIGKILL. Nothing of ours ran in it, and when it prints is a matter of timing (it failed CI once)."""
    lines = [_WORKER.sub("", _ANSI.sub("", line)) for line in log.splitlines()]
    found = []
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        j = i + 1
        while j < len(lines) and (not lines[j] or lines[j][:1].isspace()):
            j += 1
        block = lines[i : j + 1]
        teardown = (i > 0 and lines[i - 1].startswith("Exception ignored in")
                    and any("in sigterm_handler" in b for b in block) and block[-1].startswith("SystemExit"))
        if not teardown:
            found.append("\n".join(block))
    return found


class Head:
    """A Ray head on loopback with its own ports and temp dir."""

    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
        self.port, self.dash = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[str] = []
        self.node_tmps: list[str] = []
        self.client_port = free_port()
        self._ray(["start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                   "--num-gpus=0", f"--temp-dir={self.tmp}", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dash}", "--disable-usage-stats",
                   f"--ray-client-server-port={self.client_port}", f"--dashboard-agent-listen-port={free_port()}"])

    def _ray(self, args: list[str], env: dict | None = None) -> None:
        r = subprocess.run([str(BIN / "ray"), *args], env={**ENV, **(env or {})}, capture_output=True, text=True,
                           timeout=180, start_new_session=True, check=False)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    def add_node(self, resources: dict, env: dict | None = None, cpus: int = 1) -> str:
        """A second raylet on this machine joining the head, with ``cpus`` logical CPUs; returns its node-manager
        port as a marker.

        ``env`` is that node's own environment (its workers inherit it), e.g. another ``ISP_SEARCH_CACHE``.
        It gets its own temp dir: two raylets sharing one session folder share ``runtime_resources/``, and the
        second one's runtime-env agent then deletes the job's working-dir copy the first one unpacked."""
        nm = free_port()
        tmp = tempfile.mkdtemp(prefix="rn", dir="/tmp")
        self.node_tmps.append(tmp)
        self._ray(["start", f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                   f"--temp-dir={tmp}",
                   "--num-gpus=0", f"--resources={json.dumps(resources)}", f"--node-manager-port={nm}",
                   f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
                   f"--dashboard-agent-listen-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                   "--disable-usage-stats"], env=env)
        marker = f"--node_manager_port={nm}"
        self.nodes.append(marker)
        return marker

    def kill_node(self, marker: str) -> int:
        """SIGKILL the raylet started for that node and everything under it (its workers, the trial)."""
        raylets = [p for p in processes_under(marker) if "raylet" in " ".join(p.cmdline())]
        assert raylets, f"no raylet with {marker}"
        kill_tree(raylets)
        return len(raylets)

    def stop(self) -> None:
        """SIGTERM everything this head and its nodes started, all at once; SIGKILL what is left after 5 s.
        (One group at a time, each given 10 s, took 13-22 s a head: some of Ray's helpers ignore SIGTERM.)"""
        # The Ray client proxy names neither the temp dir nor the node: it is found by its own port, and other
        # helpers of this head by the GCS address (both ports were allocated to this head).
        markers = [*self.nodes, f"--port={self.client_port}", self.address, self.tmp, *self.node_tmps]
        procs = _with_children(p for m in markers for p in processes_under(m))
        _signal(procs, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=5)
        _signal(alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
        for marker in markers:  # anything started while the others were stopping
            kill_tree(processes_under(marker), signal.SIGKILL)
        for tmp in self.node_tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _with_children(procs) -> list[psutil.Process]:
    everything = {}
    for p in procs:
        try:
            everything[p.pid] = p
            for c in p.children(recursive=True):
                everything[c.pid] = c
        except psutil.NoSuchProcess:
            pass
    return list(everything.values())


def _signal(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def running_head():
    """Body of a ``head`` fixture: ``yield from running_head()`` (a test module declares its own scope)."""
    h = Head()
    try:
        yield h
    finally:
        h.stop()
