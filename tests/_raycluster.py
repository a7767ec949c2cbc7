"""A real Ray cluster on loopback for tests and benchmarks: a head and more nodes,
each started with `ray start` and its own address and resources.

Ray rewrites 127.0.0.1 to the machine's outward address (so that other machines
could reach it); any other address of 127.0.0.0/8 is kept. So the head is
127.0.0.2 and node i is 127.0.0.(2+i): every byte stays on loopback. Every process
the cluster starts is found by its temp dir and stopped by `stop()`, and only
those: another Ray on the machine is left alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from tests._llama_server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP = "127.0.0.2"


class LocalRayCluster:
    def __init__(self) -> None:
        # short: Ray's unix socket paths live under it (and must stay < 108 bytes)
        self.temp = Path(tempfile.mkdtemp(prefix="lr", dir="/tmp"))
        self.port = free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.client_port = free_port()
        self.client_address = f"ray://{HEAD_IP}:{self.client_port}"  # Ray Client
        self.nodes: dict[str, str] = {}  # node name -> its address
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            # a dead node is declared dead in ~2 s, not ~30 s
            "RAY_health_check_period_ms": "500",
            "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "4",
        }

    def _start(self, args: list[str]) -> None:
        common = [
            "--disable-usage-stats",
            f"--temp-dir={self.temp}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        out = subprocess.run(
            [RAY, "start", *args, *common],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"ray start failed: {out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def start_head(self, resources: dict[str, float], cpus: int = 1) -> None:
        self._start(
            [
                "--head",
                f"--node-ip-address={HEAD_IP}",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={self.client_port}",
                f"--num-cpus={cpus}",
                f"--resources={json.dumps(resources)}",
            ]
        )
        self.nodes["head"] = HEAD_IP

    def add_node(self, name: str, resources: dict[str, float], cpus: int = 1) -> str:
        ip = f"127.0.0.{2 + len(self.nodes)}"
        self._start(
            [
                f"--address={self.address}",
                f"--node-ip-address={ip}",
                f"--num-cpus={cpus}",
                f"--resources={json.dumps(resources)}",
            ]
        )
        self.nodes[name] = ip
        return ip

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: its daemons (found by the temp dir in their
        command lines) and their children (workers, whose titles are rewritten)."""
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["cmdline"]):
            if any(str(self.temp) in part for part in p.info["cmdline"] or ()):
                found[p.pid] = p
                for child in _children(p):
                    found[child.pid] = child
        return list(found.values())

    def raylet(self, name: str) -> psutil.Process:
        ip = self.nodes[name]
        for p in self.processes():
            cmd = _cmdline(p)
            if cmd and cmd[0].endswith("raylet") and f"--node_ip_address={ip}" in cmd:
                return p
        raise LookupError(f"no raylet for node {name} ({ip})")

    def kill_node(self, name: str) -> None:
        """SIGKILL a node's raylet and everything under it: the machine died."""
        raylet = self.raylet(name)
        victims = [raylet, *_children(raylet)]
        for p in victims:
            _signal(p, signal.SIGKILL)
        psutil.wait_procs(victims, timeout=10)

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            _signal(p, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:
            _signal(p, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return list(p.children(recursive=True))
    except psutil.Error:
        return []


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return list(p.cmdline())
    except psutil.Error:
        return []


def _signal(p: psutil.Process, sig: int) -> None:
    with suppress(psutil.Error):
        p.send_signal(sig)


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
