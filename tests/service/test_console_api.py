"""The server side of the web console (issue 21): its static pages, and the API routes it reads
(browse and search, facets, uploads, a user's leaning, trained encoders, the evaluation report)."""

import pytest
from litestar.testing import TestClient

from service.app import CONSOLE_DIR, create_app
from service.settings import Settings


@pytest.fixture
def client(engine, keys, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data", max_batch=50), engine=engine, access_keys=keys)
    with TestClient(app) as c:
        yield c


def test_the_console_is_served_without_a_key_and_the_root_redirects_to_it(client, keys):
    keys.create("ops", ["admin"])  # access control on: the pages stay public
    assert (CONSOLE_DIR / "index.html").is_file()
    for path in ("/console", "/console/", "/console/index.html"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
    assert client.get("/console/no-such-file.js").status_code == 404
    assert client.get("/console/..%2Fapp.py").status_code == 404
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/console/"
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/console")]


def test_browsing_pages_through_every_item_exactly_once(client, engine):
    seen, offset, pages = [], None, 0
    while True:
        r = client.get("/v1/items", params={"limit": 47, **({"offset": offset} if offset else {})})
        assert r.status_code == 200
        page = r.json()
        assert page["total"] == engine.catalogue.count() == 360 and len(page["items"]) <= 47
        assert all(item["score"] == 0 and item["title"] for item in page["items"])
        seen += [item["id"] for item in page["items"]]
        pages += 1
        offset = page["next"]
        if offset is None:
            break
    assert len(seen) == len(set(seen)) == 360 and pages == 8


def test_browsing_filters_by_category_and_brand_case_insensitively(client):
    staplers = client.get("/v1/items", params={"category": "staplers", "limit": 100}).json()
    assert len(staplers["items"]) == 30 and staplers["total"] == 360
    assert all(i["categories"][-1] == "Staplers" for i in staplers["items"])
    rapid = client.get("/v1/items", params={"category": "Staplers", "brand": "RAPID", "limit": 100}).json()["items"]
    assert rapid and all(i["brand"] == "Rapid" and i["categories"][-1] == "Staplers" for i in rapid)
    assert client.get("/v1/items", params={"category": "no such shelf"}).json()["items"] == []


def test_search_honours_the_filters_and_the_sentence(client):
    r = client.get("/v1/items", params={"q": "quiet keyboard under $50", "limit": 5, "offset": "ignored"})
    assert r.status_code == 200
    body = r.json()
    assert body["next"] is None and 0 < len(body["items"]) <= 5
    assert all(i["categories"][-1] == "Keyboards" and i["price"] <= 50 and i["score"] > 0 for i in body["items"])
    pens = client.get("/v1/items", params={"q": "something for my desk", "category": "Pens", "brand": "lamy"}).json()
    assert pens["items"] and all(i["categories"][-1] == "Pens" and i["brand"] == "Lamy" for i in pens["items"])
    assert len(client.get("/v1/items", params={"q": "stapler", "limit": 3}).json()["items"]) == 3


def test_browsing_refuses_bad_parameters_and_keys_without_read(client, keys):
    for params, key in (({"offset": "not-a-cursor"}, "offset"), ({"limit": 0}, None), ({"limit": 101}, None),
                        ({"q": "bad\x01text"}, "q"), ({"category": "x" * 201}, None)):
        r = client.get("/v1/items", params=params)
        assert r.status_code == 400, params
        if key:
            assert r.json()["extra"][0]["key"] == key
    writer = keys.create("writer", ["write"]).secret
    reader = keys.create("reader", ["read"]).secret
    assert client.get("/v1/items").status_code == 401
    assert client.get("/v1/items", headers={"X-API-Key": writer}).status_code == 403
    assert client.get("/v1/items", headers={"X-API-Key": reader}).status_code == 200


def test_facets_count_the_catalogue_and_follow_its_writes(client, engine, demo_items):
    facets = client.get("/v1/catalogue/facets").json()
    assert facets["items"] == 360
    by_name = {c["name"]: c["items"] for c in facets["categories"]}
    assert by_name["Office"] == 360 and by_name["Staplers"] == 30 and len(by_name) == 13
    assert [c["items"] for c in facets["categories"]] == sorted(by_name.values(), reverse=True)
    brands = {b["name"]: b["items"] for b in facets["brands"]}
    assert sum(brands.values()) == sum(1 for i in demo_items if i.get("brand"))
    prices = [i["price"] for i in demo_items if i.get("price") is not None]
    assert facets["price"] == {"min": min(prices), "max": max(prices)}
    assert client.get("/v1/catalogue/facets").json() == facets  # kept
    new = {"id": "z-1", "title": "Walnut monitor riser", "brand": "Grovemade", "categories": ["Office", "Risers"],
           "price": 9999.0}
    assert client.put("/v1/items", json={"items": [new]}).json()["upserted"] == 1
    after = client.get("/v1/catalogue/facets").json()
    assert after["items"] == 361 and after["price"]["max"] == 9999.0
    assert {"name": "Risers", "items": 1} in after["categories"] and {"name": "Grovemade", "items": 1} in after["brands"]
    assert client.put("/v1/items", json={"items": [dict(new, brand="Ugmonk")]}).json()["upserted"] == 1  # replaced
    replaced = client.get("/v1/catalogue/facets").json()
    assert {"name": "Ugmonk", "items": 1} in replaced["brands"]
    assert "Grovemade" not in {b["name"] for b in replaced["brands"]}
    assert client.delete("/v1/items/z-1").status_code == 204
    assert client.get("/v1/catalogue/facets").json() == facets


def test_facets_need_the_read_scope(client, keys):
    writer = keys.create("writer", ["write"]).secret
    assert client.get("/v1/catalogue/facets").status_code == 401
    assert client.get("/v1/catalogue/facets", headers={"X-API-Key": writer}).status_code == 403
    reader = keys.create("reader", ["read"]).secret
    assert client.get("/v1/catalogue/facets", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
