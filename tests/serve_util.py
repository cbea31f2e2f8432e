"""Helpers of the ``posekit serve`` tests: a real uvicorn server in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

from conftest import REPO_ROOT, shared_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tfpose_args() -> list[str]:
    """The offline bottom-up model (the README's command)."""
    return ["--model", "tfpose-mnv2", "--weights", str(shared_path("weights",
                                                                  "openpose_mobilenet_v2_small_432x368.onnx"))]


def coco_images() -> list:
    return sorted(shared_path("data", "mmpose-coco", "images").glob("*.jpg"))


class Server:
    """``posekit serve ARGS --port P`` in a subprocess; ``url``; ``stop()`` sends SIGTERM and waits."""

    def __init__(self, args: list[str], env: dict | None = None, wait_s: float = 90.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "posekit.cli", "serve", *args, "--port", str(self.port),
                                      "--log-level", "warning"], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=full_env, cwd=str(REPO_ROOT))
        deadline = time.monotonic() + wait_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"posekit serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"posekit serve did not answer /healthz in {wait_s} s:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
