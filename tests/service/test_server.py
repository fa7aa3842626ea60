"""A real server: `hybridrec serve` on a free loopback port, spoken to over HTTP, killed and restarted."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir, demo=False):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        self.proc = subprocess.Popen(args + (["--demo"] if demo else []), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env={**os.environ, "HYBRIDREC_LOG_LEVEL": "warning"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.kill()
        raise RuntimeError("server did not come up within 120 s")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)  # no shutdown hooks, no flush on exit
        self.proc.wait(timeout=30)


def test_real_server_survives_kill_right_after_acknowledging(tmp_path):
    data_dir = tmp_path / "data"
    server = Server(data_dir, demo=True)
    try:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert http.get("/health").json()["items"] == 360
            r = http.put("/v1/items", json={"items": [{"id": "fresh", "title": "Titanium fountain pen, fine nib",
                                                       "brand": "Lamy", "categories": ["Office", "Pens"], "price": 89}]})
            assert r.json()["upserted"] == 1
            lamps = [i["id"] for i in http.post("/v1/recommendations", json={
                "query": "desk lamp", "k": 3, "filters": {"categories": ["Desk Lamps"]}}).json()["items"]]
            r = http.post("/v1/events", json={"events": [{"user_id": "k", "type": "click", "item_id": i} for i in lamps]})
            assert r.json()["accepted"] == 3
            expected = [i["id"] for i in http.post("/v1/recommendations", json={"user_id": "k"}).json()["items"]]
            server.kill()  # immediately after the acknowledgements
    finally:
        if server.proc.poll() is None:
            server.kill()

    again = Server(data_dir)
    try:
        with httpx.Client(base_url=again.base, timeout=30) as http:
            health = http.get("/health").json()
            assert health["items"] == 361 and health["events"] == 3
            assert http.get("/v1/items/fresh").json()["brand"] == "Lamy"
            assert http.get("/v1/users/k").json()["event_counts"] == {"click": 3}
            rec = http.post("/v1/recommendations", json={"user_id": "k"}).json()
            assert [i["id"] for i in rec["items"]] == expected
            assert sum(i["categories"][-1] == "Desk Lamps" for i in rec["items"]) >= 7
            assert http.post("/v1/recommendations", json={"k": -1}).status_code == 400
    finally:
        again.kill()
