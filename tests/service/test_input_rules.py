"""The input rules over HTTP: one id rule for bodies and paths, no coercion the schema does not
declare, JSON only, caps per user, and an OpenAPI document that says all of it."""

import jsonschema_rs
import pytest
from litestar.testing import TestClient

from retrieval.limits import MAX_ATTRIBUTES
from service.app import DOCS_PATH, create_app
from service.settings import Settings

ITEM = {"id": "pen-1", "title": "Gel pen, blue", "categories": ["Office", "Pens"], "price": 2.5}


@pytest.fixture
def client(engine, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "unused"), engine=engine)
    with TestClient(app) as c:
        yield c


def error_key(response) -> str:
    body = response.json()
    assert set(body) >= {"status_code", "detail", "extra"}, body
    return body["extra"][0]["key"]


def test_every_path_id_obeys_the_id_rule_and_a_refused_one_writes_nothing(client, engine):
    for method, path, key in [
        ("PUT", "/v1/users/a%00b", "user_id"),
        ("PUT", "/v1/users/%20padded", "user_id"),
        ("GET", "/v1/users/a%7Fb", "user_id"),
        ("DELETE", "/v1/users/a%C2%85b", "user_id"),
        ("GET", "/v1/items/a%1Bb", "item_id"),
        ("DELETE", "/v1/items/x%00", "item_id"),
        ("GET", "/v1/items/tab%09/similar", "item_id"),
    ]:
        r = client.request(method, path, json={"preferences": "pens"} if method == "PUT" else None)
        assert r.status_code == 400, (method, path, r.text)
        assert error_key(r) == key and r.json()["extra"][0]["source"] == "path"
    assert engine.log.user_ids() == []


def test_ids_refused_on_write_are_the_ids_no_path_could_reach(client, engine):
    r = client.put("/v1/items", json={"items": [dict(ITEM, id="a/b"), dict(ITEM, id="pen\x00"), ITEM]})
    assert r.json()["upserted"] == 1 and [x["index"] for x in r.json()["rejected"]] == [0, 1]
    assert all(x["error"].startswith("id:") for x in r.json()["rejected"])
    r = client.post("/v1/events", json={"events": [{"user_id": "a/b", "type": "click", "item_id": "pen-1"},
                                                    {"user_id": "u", "type": "click", "item_id": "pen\x00"}]})
    assert r.json()["accepted"] == 0
    assert [x["error"].split(":")[0] for x in r.json()["rejected"]] == ["user_id", "item_id"]
    assert engine.log.user_ids() == []


@pytest.mark.parametrize("path, body, key", [
    ("/v1/recommendations", {"k": "5"}, "k"),
    ("/v1/recommendations", {"exclude_seen": "false"}, "exclude_seen"),
    ("/v1/recommendations", {"user_id": "a/b"}, "user_id"),
    ("/v1/recommendations", {"history": ["pen-1", " pen"]}, "history[1]"),
    ("/v1/recommendations", {"query": "pens\x00"}, "query"),
    ("/v1/recommendations", {"filters": {"categories": ["Pe\x1bns"]}}, "filters.categories[0]"),
    ("/v1/recommendations", {"filters": {"price_max": "10"}}, "filters.price_max"),
    ("/v1/explanations", {"item_id": "pen/1"}, "item_id"),
    ("/v1/explanations", {"item_id": "pen-1", "diversity": "0.5"}, "diversity"),
])
def test_a_body_is_not_coerced_and_errors_name_the_field(client, path, body, key):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert error_key(r) == key


def test_event_values_are_not_coerced(client, engine):
    client.put("/v1/items", json={"items": [ITEM]})
    r = client.post("/v1/events", json={"events": [
        {"user_id": "u", "type": "rating", "item_id": "pen-1", "value": "5"},
        {"user_id": "u", "type": "view", "item_id": "pen-1", "timestamp": 4_000_000_000},
        {"user_id": "u", "type": "rating", "item_id": "pen-1", "value": 5},
    ]})
    assert r.json()["accepted"] == 1
    assert [x["error"].split(":")[0] for x in r.json()["rejected"]] == ["value", "timestamp"]
    assert engine.log.event_counts("u") == {"rating": 1}


def test_only_json_bodies_are_read(client, engine):
    body = b'{"events": [{"user_id": "u", "type": "click", "item_id": "pen-1"}]}'
    client.put("/v1/items", json={"items": [ITEM]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        for method, path in [("POST", "/v1/events"), ("POST", "/v1/recommendations"), ("PUT", "/v1/users/u")]:
            r = client.request(method, path, content=body, headers={"content-type": content_type})
            assert r.status_code == 415, (content_type, path, r.text)
            assert error_key(r) == "content-type"
    assert engine.log.count() == 0
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        assert client.post("/v1/events", content=body, headers={"content-type": content_type}).status_code == 200
    assert client.post("/v1/recommendations", content=b'{"k": 3}').status_code == 200  # no type: read as JSON


def test_a_user_cannot_store_unbounded_attributes(client, engine):
    r = client.put("/v1/users/u", json={"attributes": {str(i): i for i in range(MAX_ATTRIBUTES + 1)}})
    assert r.status_code == 400 and error_key(r) == "attributes"
    r = client.put("/v1/users/u", json={"attributes": {"note": "x" * 5000}})
    assert r.status_code == 400 and error_key(r) == "attributes.note"
    r = client.put("/v1/users/u", json={"preferences": "pens\x07"})
    assert r.status_code == 400 and error_key(r) == "preferences"
    assert engine.log.user_ids() == []
    r = client.put("/v1/users/u", json={"preferences": " fountain pens ", "attributes": {"age": 40, "vip": True}})
    assert r.status_code == 200
    assert r.json()["preferences"] == "fountain pens" and r.json()["attributes"] == {"age": 40, "vip": True}


def test_the_openapi_document_says_what_the_service_does(client):
    doc = client.get(f"{DOCS_PATH}/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for method, path in [("get", "/v1/items/{item_id}"), ("delete", "/v1/items/{item_id}"),
                         ("get", "/v1/items/{item_id}/similar"), ("get", "/v1/users/{user_id}"),
                         ("post", "/v1/explanations")]:
        assert "404" in paths[path][method]["responses"], (method, path)
    for method, path in [("put", "/v1/items"), ("put", "/v1/users/{user_id}"), ("post", "/v1/recommendations")]:
        assert "415" in paths[path][method]["responses"], (method, path)
    for name in ("RecommendationsPost", "ExplanationPost", "UserPut", "Filters", "ItemsUpsert", "EventsPost"):
        assert schemas[name]["additionalProperties"] is False, name
    user_put = jsonschema_rs.validator_for(schemas["UserPut"])
    assert user_put.is_valid({"preferences": "pens", "attributes": {"n": 5, "w": 1.5, "s": "x", "b": True}})
    assert not user_put.is_valid({"attributes": {"n": [1]}})
    assert not user_put.is_valid({"preferences": "pens", "mood": "happy"})
    item_row = jsonschema_rs.validator_for(schemas["ItemsUpsert"]["properties"]["items"]["items"])
    assert item_row.is_valid(dict(ITEM, attributes={"pack": 12, "weight_g": 10.5, "refillable": True}))
    assert not item_row.is_valid(dict(ITEM, colour="blue"))
    id_schema = paths["/v1/users/{user_id}"]["get"]["parameters"][0]["schema"]
    id_rule = jsonschema_rs.validator_for(id_schema)
    assert id_rule.is_valid("user-1") and not id_rule.is_valid("a/b") and not id_rule.is_valid(" a")
