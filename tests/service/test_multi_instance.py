"""Real ``hybridrec serve`` processes on one PostgreSQL server (started by the test session):
read-your-writes across instances for events, item upserts and deletes and forgetting a user,
and SIGKILL of one of ``--workers 2`` while clients write: every acknowledged write is present
afterwards, exactly once, and the port keeps answering.

Where ``HYBRIDREC_TEST_QDRANT_URL`` names a Qdrant server, the instances share it as their vector
index instead of each keeping an embedded one."""

import os
import signal
import threading
import time

import httpx
import psycopg
import pytest

from tests.service.serve_process import ServeProcess

pytestmark = pytest.mark.slow
QDRANT_URL = os.environ.get("HYBRIDREC_TEST_QDRANT_URL")


@pytest.fixture
def shared_env(postgres_url):
    env = {"HYBRIDREC_DATABASE_URL": postgres_url}
    if QDRANT_URL:
        env["HYBRIDREC_QDRANT_URL"] = QDRANT_URL
    return env


def recommend(base, user_id, k=10):
    r = httpx.post(base + "/v1/recommendations", json={"user_id": user_id, "k": k}, timeout=60)
    assert r.status_code == 200, r.text
    return [i["id"] for i in r.json()["items"]]


def test_two_instances_read_each_others_writes_at_once(tmp_path, shared_env):
    a = ServeProcess(["--demo", "--data-dir", str(tmp_path / "a")], tmp_path / "a.log", shared_env)
    b = ServeProcess(["--data-dir", str(tmp_path / "b")], tmp_path / "b.log", shared_env)
    try:
        health = httpx.get(b.base + "/health").json()
        assert health["items"] == httpx.get(a.base + "/health").json()["items"] > 0
        assert health["log"]["database"] == "postgresql" and health["log"]["applied"] == health["log"]["head"]
        items = httpx.get(a.base + "/v1/items", params={"limit": 20}).json()["items"]
        cold = recommend(b.base, "shopper")

        # Events posted to A shape B's very next recommendation: B answers what A answers.
        events = [{"user_id": "shopper", "type": "purchase", "item_id": i["id"]} for i in items[:4]]
        assert httpx.post(a.base + "/v1/events", json={"events": events}).json()["accepted"] == 4
        warm = recommend(b.base, "shopper")
        assert warm != cold and warm == recommend(a.base, "shopper")
        assert httpx.get(b.base + "/v1/users/shopper").json()["total_events"] == 4

        # An item written to A is served by B at once; a delete too.
        new = {"id": "can-1", "title": "Copper watering can for house plants and seedlings", "categories": ["Garden"]}
        assert httpx.put(a.base + "/v1/items", json={"items": [new]}).json()["upserted"] == 1
        got = httpx.get(b.base + "/v1/items/can-1")
        assert got.status_code == 200 and got.json()["title"] == new["title"]
        assert httpx.delete(a.base + f"/v1/items/{items[10]['id']}").status_code == 204
        assert httpx.get(b.base + f"/v1/items/{items[10]['id']}").status_code == 404

        # Forgetting on A: B no longer knows the user and answers as for a stranger.
        assert httpx.delete(a.base + "/v1/users/shopper").status_code == 200
        assert httpx.get(b.base + "/v1/users/shopper").status_code == 404
        assert recommend(b.base, "shopper") == recommend(b.base, "nobody-at-all")
        ready = httpx.get(b.base + "/ready")
        assert ready.status_code == 200, ready.text
    finally:
        a.stop(); b.stop()


def test_a_worker_killed_mid_stream_loses_no_acknowledged_write(tmp_path, shared_env, postgres_url):
    server = ServeProcess(["--demo", "--workers", "2", "--data-dir", str(tmp_path / "d")], tmp_path / "w.log",
                          shared_env, timeout=300)
    clients, per_client_before, per_client_after = 4, 40, 40
    acknowledged: dict[str, list[float]] = {f"c{k}": [] for k in range(clients)}
    failed = {name: 0 for name in acknowledged}
    killed = threading.Event()
    try:
        items = [i["id"] for i in httpx.get(server.base + "/v1/items", params={"limit": 30}).json()["items"]]
        workers = server.workers()
        assert len(workers) == 2, server.output()

        def write(name: str) -> None:
            # A connection per request, so the kernel spreads them over both workers.
            with httpx.Client(base_url=server.base, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as http:
                sent = 0
                while sent < per_client_before + per_client_after:
                    if sent == per_client_before and not killed.wait(120):
                        return
                    ts = 1_700_000_000 + sent  # this event's mark: one per client and request
                    body = {"events": [{"user_id": name, "type": "click", "item_id": items[sent % len(items)],
                                        "timestamp": ts}]}
                    sent += 1
                    try:
                        r = http.post("/v1/events", json=body)
                    except httpx.HTTPError:
                        failed[name] += 1  # not acknowledged: it may or may not be there, at most once
                        continue
                    if r.status_code == 200 and r.json()["accepted"] == 1:
                        acknowledged[name].append(ts)
                    else:
                        failed[name] += 1

        threads = [threading.Thread(target=write, args=(name,)) for name in acknowledged]
        for t in threads:
            t.start()
        while sum(map(len, acknowledged.values())) < clients * per_client_before // 2:
            time.sleep(0.05)
        os.kill(workers[0], signal.SIGKILL)  # mid-stream: clients keep writing through the port
        killed.set()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 180
        while not (workers[0] not in server.workers() and len(server.workers()) == 2) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert workers[0] not in server.workers() and len(server.workers()) == 2, "the killed worker is replaced"
        answered = recommend(server.base, "c0")
        assert answered, "the port keeps answering after a worker was killed"
        # /metrics counts every worker's requests (the killed one's too), whichever worker answers it.
        # The killed worker may have answered a request and died before counting it: at most one per
        # client. One worker's own count would be about half.
        metrics = httpx.get(server.base + "/metrics", timeout=30).text
        event_posts = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                          if line.startswith("hybridrec_requests_total{") and '"/v1/events"' in line)
        assert event_posts >= sum(map(len, acknowledged.values())) - clients, metrics[:2000]
        # Nothing is in progress now: what the killed worker had in flight is not summed in for good.
        in_progress = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                          if line.startswith("hybridrec_requests_in_progress{"))
        assert in_progress == 0, [line for line in metrics.splitlines() if "in_progress" in line]
    finally:
        server.stop()
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT user_id, ts, COUNT(*) FROM events GROUP BY user_id, ts").fetchall()
    stored = {(user, ts): n for user, ts, n in rows}
    for name, marks in acknowledged.items():
        missing = [ts for ts in marks if (name, float(ts)) not in stored]
        assert not missing, f"{name}: acknowledged events missing: {missing}"
    assert all(n == 1 for n in stored.values()), "an event stored twice"
    total_ack = sum(map(len, acknowledged.values()))
    assert total_ack >= clients * (per_client_before + per_client_after) - sum(failed.values())
    assert len(stored) <= total_ack + sum(failed.values())
    assert total_ack > clients * per_client_before  # writes went on after the kill


def test_reindex_is_refused_where_instances_share_a_database(make_engine, postgres_url, tmp_path, capsys):
    from litestar.testing import TestClient

    from service.app import create_app
    from service.cli import main
    from service.settings import Settings

    engine = make_engine(data_dir=tmp_path / "d", database_url=postgres_url)
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", database_url=postgres_url), engine=engine)) as client:
        refused = client.post("/v1/admin/reindex", json={})
        assert refused.status_code == 409 and "share a database" in refused.json()["detail"]
    engine.close()
    os.environ["HYBRIDREC_DATABASE_URL"] = postgres_url
    try:
        assert main(["reindex", "--data-dir", str(tmp_path / "d")]) == 2
    finally:
        del os.environ["HYBRIDREC_DATABASE_URL"]
    assert "share a database" in capsys.readouterr().err
