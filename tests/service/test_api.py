"""The HTTP contract through Litestar's test client, on both back-ends of the system of record."""

import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, make_engine, demo_points):
    """The demo catalogue on the embedded SQLite record, and on a test-started PostgreSQL."""
    config = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    eng = make_engine(**config)
    eng.catalogue.write(demo_points)
    return eng


@pytest.fixture
def client(engine, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "unused", max_batch=50), engine=engine)
    with TestClient(app) as c:
        yield c


ITEM = {"id": "x-1", "title": "Quiet ergonomic keyboard", "brand": "Kinesis", "categories": ["Office", "Keyboards"],
        "price": 99.5, "attributes": {"colour": "black", "wireless": True}, "description": "Split, quiet switches."}


def test_items_crud_and_idempotent_upsert(client, engine):
    n = engine.catalogue.count()
    r = client.put("/v1/items", json={"items": [ITEM, {"id": "bad", "price": -3}, "not an object"]})
    assert r.status_code == 200
    body = r.json()
    assert body["upserted"] == 1
    assert [(x["index"], x["id"]) for x in body["rejected"]] == [(1, "bad"), (2, None)]
    assert "title" in body["rejected"][0]["error"]
    assert client.put("/v1/items", json={"items": [ITEM]}).json() == {"upserted": 1, "rejected": []}
    assert engine.catalogue.count() == n + 1
    assert client.get("/v1/items/x-1").json() == ITEM
    assert client.get("/v1/items/bad").status_code == 404
    similar = client.get("/v1/items/x-1/similar", params={"k": 3}).json()
    assert len(similar["items"]) == 3 and similar["items"][0]["categories"][-1] == "Keyboards"
    assert client.get("/v1/items/nope/similar").status_code == 404
    assert client.get("/v1/items/x-1/similar", params={"k": 1000}).status_code == 400
    assert client.delete("/v1/items/x-1").status_code == 204
    assert client.get("/v1/items/x-1").status_code == 404
    assert client.delete("/v1/items/x-1").status_code == 404


def test_batch_limit_and_bad_bodies_change_nothing(client, engine):
    n = engine.catalogue.count()
    r = client.put("/v1/items", json={"items": [dict(ITEM, id=f"b{i}") for i in range(51)]})
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "items"
    for body in ({"item": [ITEM]}, {"items": "x"}, [ITEM]):
        assert client.put("/v1/items", json=body).status_code == 400
    assert client.put("/v1/items", content=b"{not json").status_code == 400
    assert engine.catalogue.count() == n


def test_a_request_retried_with_its_event_ids_is_logged_once(client):
    staplers = [i["id"] for i in client.post("/v1/recommendations", json={
        "query": "stapler", "k": 2, "filters": {"categories": ["Staplers"]}}).json()["items"]]
    events = [{"user_id": "retry", "type": "click", "item_id": i, "event_id": f"click-{n}"}
              for n, i in enumerate(staplers)]
    assert client.post("/v1/events", json={"events": events}).json() == {"accepted": 2, "rejected": [], "duplicates": 0}
    # The answer was lost; the client sends the request again, with one new event.
    again = events + [{"user_id": "retry", "type": "purchase", "item_id": staplers[0], "event_id": "buy-0"}]
    assert client.post("/v1/events", json={"events": again}).json() == {"accepted": 1, "rejected": [], "duplicates": 2}
    assert client.get("/v1/users/retry").json()["event_counts"] == {"click": 2, "purchase": 1}
    bad = client.post("/v1/events", json={"events": [{"user_id": "retry", "type": "click", "item_id": staplers[0],
                                                      "event_id": "a/b"}]}).json()
    assert bad["accepted"] == 0 and "event_id" in bad["rejected"][0]["error"]


def test_events_update_the_next_recommendation(client):
    staplers = [i["id"] for i in client.post("/v1/recommendations", json={
        "query": "stapler", "k": 3, "filters": {"categories": ["Staplers"]}}).json()["items"]]
    r = client.post("/v1/events", json={"events": [
        *({"user_id": "web", "type": "click", "item_id": i} for i in staplers),
        {"user_id": "web", "type": "view", "item_id": "ghost"},
        {"user_id": "web", "type": "teleport", "item_id": staplers[0]},
        {"user_id": "web", "type": "search", "query": "staples"},
    ]})
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 4
    assert [(x["index"], "item_id" in x["error"] or "type" in x["error"]) for x in body["rejected"]] == [(3, True), (4, True)]
    rec = client.post("/v1/recommendations", json={"user_id": "web", "k": 10}).json()
    assert rec["profile"] == "stored"
    assert sum(i["categories"][-1] == "Staplers" for i in rec["items"]) >= 7
    assert not set(staplers) & {i["id"] for i in rec["items"]}
    assert rec["models"] == {"encoder": "all-MiniLM-L6-v2", "reranker": None, "sequence": None} and rec["reranked"] is False
    user = client.get("/v1/users/web").json()
    assert user["event_counts"] == {"click": 3, "search": 1} and user["recent_items"][0] == staplers[-1]


def test_recommendation_trace_and_filters(client):
    rec = client.post("/v1/recommendations", json={
        "query": "wireless mouse", "k": 5, "filters": {"brands": ["logitech"], "price_max": 80}}).json()
    assert rec["items"]
    for item in rec["items"]:
        assert item["brand"] == "Logitech" and item["price"] <= 80
        assert item["sources"] and all("rank" in s for s in item["sources"].values())
    popular = client.post("/v1/recommendations", json={}).json()
    assert len(popular["items"]) == 10 and popular["sources"] == ["popular"]


@pytest.mark.parametrize("body, key", [
    ({"k": 0}, "k"), ({"k": 101}, "k"), ({"k": "ten"}, "k"), ({"user_id": 5}, "user_id"),
    ({"filters": {"price_min": "cheap"}}, "filters.price_min"), ({"history": ["nope"]}, "history[0]"),
    ({"filters": {"price_min": 50, "price_max": 10}}, "filters.price_min"), ({"exclude_seen": "yes"}, "exclude_seen"),
])
def test_bad_recommendation_requests_get_400_naming_the_field(client, body, key):
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 400
    assert r.json()["extra"][0]["key"] == key


def test_users_preferences_summary_and_forget(client):
    assert client.get("/v1/users/anna").status_code == 404
    r = client.put("/v1/users/anna", json={"preferences": "fountain pens and dotted notebooks", "attributes": {"plan": "pro"}})
    assert r.status_code == 200 and r.json()["has_profile"] and r.json()["attributes"] == {"plan": "pro"}
    rec = client.post("/v1/recommendations", json={"user_id": "anna"}).json()
    assert sum(i["categories"][-1] in ("Pens", "Notebooks") for i in rec["items"]) >= 8
    assert client.put("/v1/users/anna", json={"preferences": 7}).status_code == 400
    assert client.put("/v1/users/anna", json={"likes": "x"}).status_code == 400
    gone = client.delete("/v1/users/anna").json()
    assert gone["forgotten"] is True and gone["models_trained_on_user"] == []
    assert client.get("/v1/users/anna").status_code == 404
    assert client.delete("/v1/users/anna").json() == {"id": "anna", "forgotten": False, "events_deleted": 0,
                                                      "models_trained_on_user": []}


def test_health_and_docs(client, engine):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] == engine.catalogue.count()
    assert client.get("/docs/openapi.json").json()["info"]["title"] == "hybridrec"
    assert client.get("/docs/swagger").status_code == 200


@pytest.mark.slow
def test_online_reindex_through_the_admin_api(client, engine, encoder, tmp_path):
    if engine.shared:  # instances sharing a database refuse it (tests/service/test_multi_instance.py)
        assert client.post("/v1/admin/reindex", json={}).status_code == 409
        return
    assert client.post("/v1/admin/reindex", json={}).status_code == 400  # no trained encoder yet
    assert client.post("/v1/admin/reindex", json={"encoder": str(tmp_path / "nope")}).json()["extra"][0]["key"] == "encoder"
    engine.models.encoder_dir.mkdir(parents=True)  # only encoders the service keeps may be named
    version = engine.models.encoders.save(encoder.save, {"accepted": True})
    folder = engine.models.encoders.path(version)
    r = client.post("/v1/admin/reindex", json={"encoder": version})
    assert r.status_code == 202 and r.json()["state"] == "running"
    blocked = client.put("/v1/items", json={"items": [ITEM]})
    if client.get("/v1/admin/reindex").json()["state"] == "running":
        assert blocked.status_code == 409 and blocked.headers["retry-after"] == "30"
    import time
    deadline = time.monotonic() + 120
    while client.get("/v1/admin/reindex").json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    state = client.get("/v1/admin/reindex").json()
    assert state["state"] == "done" and state["items"] == 360, state
    assert engine.layout.items == state["layout"]["items"] and engine.layout.encoder == str(folder)
    assert client.put("/v1/items", json={"items": [ITEM]}).json()["upserted"] == 1
    assert client.get("/v1/items/x-1/similar").status_code == 200
    models = client.get("/v1/admin/models").json()
    assert models["serving"] is None and models["versions"] == []
