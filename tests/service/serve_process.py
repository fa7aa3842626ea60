"""A real ``hybridrec serve`` in its own process group on a free loopback port, for tests that need
the whole service: HTTP server, workers, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_DEVICE
from tests.postgres_server import free_port


class ServeProcess:
    """Start ``hybridrec serve`` with ``args`` and ``env`` and wait until ``/health`` answers.

    Example::

        server = ServeProcess(["--demo", "--data-dir", str(tmp_path)], log_path=tmp_path / "serve.log")
        httpx.get(server.base + "/health")
        server.stop()
    """

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, timeout: float = 180):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), *args]
        environment = {**os.environ, "HYBRIDREC_LOG_LEVEL": "warning", "HYBRIDREC_DEVICE": TEST_DEVICE,
                       # test clients share one loopback address: no 429s, which would only slow them
                       "HYBRIDREC_READ_RATE_LIMIT": "0", "HYBRIDREC_WRITE_RATE_LIMIT": "0", **(env or {})}
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.output()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not come up within {timeout:.0f} s: {self.output()}")
            time.sleep(0.3)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def workers(self) -> list[int]:
        """The live worker processes of ``serve --workers N``, by pid (multiprocessing's own helper
        processes and a dead worker not yet reaped are left out)."""
        out = subprocess.run(["ps", "-ww", "-o", "pid=,stat=,args=", "--ppid", str(self.proc.pid)], capture_output=True,
                             text=True)
        rows = [line.split(None, 2) for line in out.stdout.splitlines()]
        return [int(pid) for pid, stat, args in rows
                if not stat.startswith("Z") and "spawn_main" in args and "resource_tracker" not in args]

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks, no flush on exit."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
