"""Rate limits per key (429 with Retry-After), back-pressure in front of the engine's threads (503
with Retry-After), and a deadline on explanations that call a model."""

import threading

import pytest
from litestar.testing import TestClient

from prompts import explain_text
from prompts.generators import GeneratorError, TimeLimitedGenerator
from service.app import create_app
from service.settings import Settings


def _client(engine, keys, tmp_path, **settings):
    return TestClient(create_app(Settings(data_dir=tmp_path / "unused", **settings), engine=engine, access_keys=keys))


def _until_refused(send, tries: int = 40):
    """Send until one answer is a 429 (a limit's window is a wall-clock second, so a burst may
    straddle two windows); returns the answers."""
    answers = []
    for _ in range(tries):
        answers.append(send())
        if answers[-1].status_code == 429:
            break
    return answers


def test_reads_past_a_keys_rate_are_refused_with_retry_after_and_other_keys_are_not(engine, keys, tmp_path):
    keys.create("admin", ["admin"])
    one, two = keys.create("one", ["read", "write"]), keys.create("two", ["read"])
    with _client(engine, keys, tmp_path, read_rate_limit=3, write_rate_limit=0) as client:
        answers = _until_refused(lambda: client.post("/v1/recommendations", json={"k": 1},
                                                     headers={"X-API-Key": one.secret}))
        refused = answers[-1]
        assert refused.status_code == 429, [a.status_code for a in answers]
        assert int(refused.headers["retry-after"]) >= 1
        body = refused.json()
        assert "read requests per second" in body["detail"] and body["request_id"] == refused.headers["x-request-id"]
        assert client.post("/v1/recommendations", json={"k": 1}, headers={"X-API-Key": two.secret}).status_code == 200
        # Writes have their own budget (here: none), and health checks are never limited.
        write = client.post("/v1/events", json={"events": []}, headers={"X-API-Key": one.secret})
        assert write.status_code == 200
        assert all(client.get("/health").status_code == 200 for _ in range(10))


def test_invented_keys_count_against_their_address_and_never_against_the_real_key(engine, keys, tmp_path):
    keys.create("admin", ["admin"])
    writer = keys.create("writer", ["write"])
    with _client(engine, keys, tmp_path, write_rate_limit=2) as client:
        # A new invented key per request: each one used to start a budget of its own.
        forged = iter(f"hr_{writer.id}_not-the-secret-{n}" for n in range(100))
        answers = _until_refused(lambda: client.post("/v1/events", json={"events": []},
                                                     headers={"X-API-Key": next(forged)}))
        assert answers[-1].status_code == 429 and {a.status_code for a in answers[:-1]} == {401}
        assert client.post("/v1/events", json={"events": []}, headers={"X-API-Key": writer.secret}).status_code == 200


def test_with_access_control_off_any_key_sent_counts_against_the_address(engine, keys, tmp_path):
    with _client(engine, keys, tmp_path, read_rate_limit=2, write_rate_limit=0) as client:
        invented = iter(f"anything-{n}" for n in range(100))
        answers = _until_refused(lambda: client.post("/v1/recommendations", json={"k": 1},
                                                     headers={"X-API-Key": next(invented)}))
        assert answers[-1].status_code == 429 and {a.status_code for a in answers[:-1]} == {200}
        # Counted as what they were: a refusal raised inside the metrics middleware used to count as a 200.
        assert _counted(client, "POST", "/v1/recommendations", 429) >= 1


def _counted(client, method: str, path: str, status: int) -> float:
    """``hybridrec_requests_total`` for one route and status, as /metrics says it."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "hybridrec_requests_total" and sample.labels.get("path") == path and \
                    sample.labels.get("method") == method and sample.labels.get("status_code") == str(status):
                return sample.value
    return 0.0


def test_a_full_engine_queue_answers_503_at_once_and_recovers(engine, keys, tmp_path):
    release, entered = threading.Event(), threading.Event()
    original = engine.recommender.recommend

    def stuck(*args, **kwargs):
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    engine.recommender.recommend = stuck
    with _client(engine, keys, tmp_path, engine_threads=1, engine_queue=0) as client:
        first: dict = {}
        worker = threading.Thread(target=lambda: first.update(r=client.post("/v1/recommendations", json={"k": 1})))
        worker.start()
        assert entered.wait(30)
        busy = client.post("/v1/recommendations", json={"k": 1})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["detail"] and busy.json()["request_id"] == busy.headers["x-request-id"]
        assert _counted(client, "POST", "/v1/recommendations", 503) >= 1
        release.set()
        worker.join(30)
        assert first["r"].status_code == 200
        engine.recommender.recommend = original
        assert client.post("/v1/recommendations", json={"k": 1}).status_code == 200


class _SlowModel:
    name = "slow"

    def __init__(self):
        self.release = threading.Event()

    def generate(self, prompt: str) -> str:
        self.release.wait(30)
        return "late words"


def test_a_model_past_its_deadline_gives_way_to_the_template_text():
    model = _SlowModel()
    generator = TimeLimitedGenerator(model, seconds=0.2, workers=1)
    with pytest.raises(GeneratorError, match="no answer within 0.2 s"):
        generator.generate("hello")
    evidence = {"item": {"id": "a", "title": "Red stapler"}, "drivers": [], "sources": {}}
    out = explain_text(evidence, generator, {"brands": [], "categories": []})
    model.release.set()
    assert out["text"] == out["template_text"] and out["guard"]["fired"]
    assert "no answer within" in out["guard"]["violations"][0]
