"""``GET /v1/items/{id}/similar`` over HTTP: hybrid neighbours with their trace, filters, 404."""

import pytest
from litestar.testing import TestClient

from service.app import DOCS_PATH, create_app
from service.settings import Settings
from tests.retrieval.test_recommender import ids_by_category


@pytest.fixture
def client(engine, tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "unused"), engine=engine)
    with TestClient(app) as c:
        yield c


def test_similar_items_say_which_sources_proposed_them(client, engine):
    keyboard, lamp = ids_by_category(engine, "Keyboards")[0], ids_by_category(engine, "Desk Lamps")[0]
    engine.profiles.record([{"user_id": f"u{n}", "type": "purchase", "item_id": i}
                            for n in range(3) for i in (keyboard, lamp)])
    # Every lamp is taken by someone, so the collaborative source judges the other lamps too.
    pen = ids_by_category(engine, "Pens")[0]
    engine.profiles.record([{"user_id": f"lamp-{x}", "type": "purchase", "item_id": i}
                            for x in ids_by_category(engine, "Desk Lamps") for i in (x, pen)])
    body = client.get(f"/v1/items/{keyboard}/similar", params={"k": 5}).json()
    assert body["item_id"] == keyboard and body["sources"] == ["collaborative", "dense", "lexical"]
    assert len(body["items"]) == 5
    for item in body["items"]:  # the fields the route always had, and the trace
        assert {"id", "title", "score", "brand", "categories", "price"} <= set(item)
        assert item["sources"] and set(item["sources"]) <= {"collaborative", "dense", "lexical"}
        assert all({"rank", "score", "contribution"} == set(s) for s in item["sources"].values())
    lamps = client.get(f"/v1/items/{keyboard}/similar", params={"k": 3, "category": "Desk Lamps"}).json()
    assert lamps["items"][0]["id"] == lamp and "collaborative" in lamps["items"][0]["sources"]
    assert all(i["categories"][-1] == "Desk Lamps" for i in lamps["items"])
    cheap = client.get(f"/v1/items/{keyboard}/similar", params={"price_max": 50}).json()
    assert cheap["items"] and all(i["price"] <= 50 for i in cheap["items"])


def test_new_item_has_text_neighbours_and_unknown_is_404(client):
    item = {"id": "new-1", "title": "Copper watering can for house plants and seedlings", "price": 24.0,
            "categories": ["Office", "Desk Lamps"]}
    assert client.put("/v1/items", json={"items": [item]}).json()["upserted"] == 1
    body = client.get("/v1/items/new-1/similar", params={"k": 3}).json()
    assert len(body["items"]) == 3 and body["sources"] == ["dense", "lexical"] and body["notes"]
    assert all(0 < i["text_similarity"] <= 1 for i in body["items"])
    assert client.get("/v1/items/nope/similar").status_code == 404
    assert client.get("/v1/items/new-1/similar", params={"price_min": "nan"}).status_code == 400


def test_openapi_documents_the_trace(client):
    schemas = client.get(f"{DOCS_PATH}/openapi.json").json()["components"]["schemas"]
    similar_item = next(s for name, s in schemas.items() if name.endswith("SimilarItem"))
    assert {"sources", "no_opinion", "text_similarity", "score"} <= set(similar_item["properties"])
    similar_items = next(s for name, s in schemas.items() if name.endswith("SimilarItems"))
    assert {"item_id", "items", "sources", "notes"} <= set(similar_items["properties"])
