"""Request ids, the per-request log line, /metrics, /ready and the body limits."""

import json
import logging
import os

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture
def client(engine, keys, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "unused", max_body_bytes=64 * 1024), engine=engine, access_keys=keys)
    with TestClient(app) as c:
        yield c


def test_request_ids_are_echoed_or_made_and_repeated_in_error_bodies(client):
    mine = client.get("/health", headers={"X-Request-ID": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    made = client.get("/health").headers["x-request-id"]
    assert len(made) == 32 and made != client.get("/health").headers["x-request-id"]
    hostile = client.get("/health", headers={"X-Request-ID": "a b\tc" * 40}).headers["x-request-id"]
    assert len(hostile) == 32  # an untidy id is replaced, never echoed
    bad = client.post("/v1/recommendations", json={"k": 0}, headers={"X-Request-ID": "r-1"})
    assert bad.status_code == 400 and bad.json()["request_id"] == "r-1"
    missing = client.get("/v1/items/nope", headers={"X-Request-ID": "r-2"})
    assert missing.status_code == 404 and missing.json()["request_id"] == "r-2"


def test_one_json_log_line_per_request_with_the_key_id_never_the_key(client, keys, caplog):
    key = keys.create("reader", ["read"])
    with caplog.at_level(logging.INFO, logger="hybridrec.access"):
        client.post("/v1/recommendations", json={"k": 2}, headers={"X-API-Key": key.secret, "X-Request-ID": "q-7"})
        client.get("/v1/items/nope", headers={"X-API-Key": key.secret})
    lines = [json.loads(r.message) for r in caplog.records if r.name == "hybridrec.access"]
    assert [(line["method"], line["status"]) for line in lines] == [("POST", 200), ("GET", 404)]
    first = lines[0]
    assert first["request_id"] == "q-7" and first["key_id"] == key.id and first["latency_ms"] > 0
    assert first["route"] == "/v1/recommendations" and lines[1]["route"].startswith("/v1/items/")
    assert key.secret not in caplog.text


def metric(text: str, series: str) -> float:
    """A series' value in Prometheus' text format (0 when absent); counters are per process, so
    tests compare before and after."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_steps_events_and_the_serving_state(client, engine, demo_items):
    series = ('hybridrec_recommend_step_seconds_count{step="gather"}',
              'hybridrec_recommend_step_seconds_count{step="diversify"}',
              'hybridrec_events_total{outcome="accepted",type="click"}',
              'hybridrec_events_total{outcome="rejected",type="click"}',
              'hybridrec_items_written_total{outcome="rejected"}',
              'hybridrec_requests_total{app_name="hybridrec",method="POST",path="/v1/recommendations",'
              'status_code="200"}')
    before = client.get("/metrics").text
    client.post("/v1/recommendations", json={"history": [demo_items[0]["id"]], "k": 3})
    client.post("/v1/events", json={"events": [{"user_id": "m1", "type": "click", "item_id": demo_items[1]["id"]},
                                               {"user_id": "m1", "type": "click", "item_id": "no-such-item"}]})
    client.put("/v1/items", json={"items": [{"id": "bad"}]})
    after = client.get("/metrics").text
    assert [metric(after, s) - metric(before, s) for s in series] == [1, 1, 1, 1, 1, 1]
    assert metric(after, "hybridrec_catalogue_items") == engine.catalogue.count()
    assert metric(after, 'hybridrec_serving_model_info{kind="encoder",version="all-MiniLM-L6-v2"}') == 1
    assert metric(after, 'hybridrec_serving_model_info{kind="reranker",version="none"}') == 1
    assert 'hybridrec_profile_lag_events 0.0' in after


def test_a_retried_event_is_counted_as_a_duplicate_not_as_accepted_again(client, demo_items):
    accepted, duplicate = ('hybridrec_events_total{outcome="accepted",type="like"}',
                           'hybridrec_events_total{outcome="duplicate",type="like"}')
    before = client.get("/metrics").text
    event = {"user_id": "m2", "type": "like", "item_id": demo_items[2]["id"], "event_id": "e-1"}
    answers = [client.post("/v1/events", json={"events": [event]}).json() for _ in range(3)]
    assert [(a["accepted"], a["duplicates"]) for a in answers] == [(1, 0), (0, 1), (0, 1)]
    after = client.get("/metrics").text
    assert [metric(after, s) - metric(before, s) for s in (accepted, duplicate)] == [1, 2]


def test_metrics_need_the_admin_scope_once_keys_exist(client, keys):
    reader, admin = keys.create("r", ["read"]), keys.create("a", ["admin"])
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": reader.secret}).status_code == 403
    assert client.get("/metrics", headers={"X-API-Key": admin.secret}).status_code == 200


def test_ready_until_profiles_fall_behind_the_log(client, engine, demo_items):
    ok = client.get("/ready")
    assert ok.status_code == 200 and ok.json()["ready"] and ok.json()["profile_lag"] == 0
    from retrieval.storage.records import parse_event

    # An event logged without its profile refresh: what a process killed in between leaves behind.
    engine.log.append([parse_event({"user_id": "late", "type": "click", "item_id": demo_items[0]["id"]}, 0.0)])
    behind = client.get("/ready")
    assert behind.status_code == 503 and behind.headers["retry-after"] == "5"
    assert behind.json()["checks"]["profiles"] == "1 logged events not yet in profiles"
    engine.profiles.repair()
    assert client.get("/ready").status_code == 200


def test_ready_says_which_part_does_not_answer(client, engine, keys, monkeypatch):
    assert client.get("/ready").json()["checks"]["keys"] == "ok"
    keys.close()  # every keyed request would fail: this instance must not take traffic
    refused = client.get("/ready")
    assert refused.status_code == 503 and refused.json()["checks"]["keys"].startswith("not answering:")

    def unreachable(*args, **kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(engine.profiles, "lag", unreachable)  # a 500 before: the log is what it reads
    refused = client.get("/ready")
    assert refused.status_code == 503
    assert refused.json()["checks"]["profiles"] == "not answering: the database went away"


def test_health_ready_and_metrics_answer_while_the_database_does_not(client, engine, monkeypatch):
    import threading

    release = threading.Event()

    def stuck(*args, **kwargs):  # a database gone: its pool waits 30 s for a connection, then fails
        release.wait(60)
        raise ConnectionError("couldn't get a connection after 30.00 sec")

    for name in ("count", "head"):
        monkeypatch.setattr(engine.log, name, stuck)
    monkeypatch.setattr(engine.profiles, "lag", stuck)
    try:
        for _ in range(2):  # the reads still stuck from the first round never crowd out the parts that answer
            health = client.get("/health")  # liveness: alive, and says what does not answer
            assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
            assert health.json()["events"] is None and health.json()["items"] == engine.catalogue.count()
            assert health.json()["problems"] == ["log: not answering: no answer within 2 s"] * 2
            assert health.json()["log"]["head"] is None
            ready = client.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["profiles"] == "not answering: no answer within 2 s"
            assert ready.json()["checks"]["store"] == ready.json()["checks"]["keys"] == "ok"
            metrics = client.get("/metrics")
            assert metrics.status_code == 200 and "hybridrec_catalogue_items " in metrics.text
            assert "hybridrec_events_logged " not in metrics.text
    finally:
        release.set()


def test_unknown_routes_and_methods_carry_the_request_id_too(client, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="hybridrec.access"):
        for method, path, status in (("GET", "/no-such-route", 404), ("PATCH", "/v1/items", 405)):
            r = client.request(method, path, headers={"X-Request-ID": f"trace-{status}"})
            assert r.status_code == status and r.headers["x-request-id"] == f"trace-{status}", r.headers
            assert r.json()["request_id"] == f"trace-{status}"  # null before: no middleware saw them
    logged = [json.loads(m) for m in caplog.messages if m.startswith("{")]
    assert [(line["request_id"], line["status"]) for line in logged] == [("trace-404", 404), ("trace-405", 405)]


def test_oversized_and_deeply_nested_bodies_are_refused_in_words(client):
    big = client.post("/v1/recommendations", content=b'{"query": "' + b"x" * 70_000 + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "larger than 65536 bytes" in big.json()["detail"]
    nested = "[" * 2000 + "]" * 2000
    for path in ("/v1/events", "/v1/items", "/v1/recommendations", "/v1/explanations"):
        r = client.request("PUT" if path == "/v1/items" else "POST", path, content=f'{{"events": {nested}}}',
                           headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["detail"], (path, r.text)


def test_a_killed_workers_in_progress_gauge_is_cleared_at_the_next_scrape(tmp_path):
    import subprocess
    import sys

    from service.observability import forget_dead_workers

    # Two workers in the multiprocess folder, each with a request in progress; one is then killed.
    program = ("import sys, time; from prometheus_client import Gauge; "
               "Gauge('hybridrec_requests_in_progress', 'x', multiprocess_mode='livesum').inc(); "
               "print('up', flush=True); time.sleep(float(sys.argv[1]))")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    killed = subprocess.Popen([sys.executable, "-c", program, "60"], env=env, stdout=subprocess.PIPE, text=True)
    alive = subprocess.Popen([sys.executable, "-c", program, "60"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline() == "up\n" and alive.stdout.readline() == "up\n"
        killed.kill()
        killed.wait(30)
        assert forget_dead_workers(str(tmp_path)) == [killed.pid]
        left = sorted(p.name for p in tmp_path.glob("gauge_live*"))
        assert left == [f"gauge_livesum_{alive.pid}.db"]  # a running worker's gauge stays
    finally:
        alive.kill()
        alive.wait(30)
