"""The VectorStore contract, checked against both implementations."""

import numpy as np
import pytest
from qdrant_client import QdrantClient

from retrieval.state.bm25 import Bm25Encoder
from retrieval.storage.client import ClientVectorStore
from retrieval.storage.edge import EdgeVectorStore
from retrieval.storage.vector_store import CollectionSpec, ItemFilter, StoredPoint

SPEC = CollectionSpec("items", dim=4, sparse=True, keyword_indexes=("id", "brand_key", "category_keys"),
                      float_indexes=("price",))
BM25 = Bm25Encoder()


def point(i: str, vec, brand="Acme", cats=("pens",), price=10.0, title="blue pen"):
    payload = {"title": title, "brand": brand, "brand_key": brand.lower(), "category_keys": list(cats), "price": price}
    v = np.asarray(vec, dtype=np.float32)
    return StoredPoint(i, payload, v / np.linalg.norm(v), BM25.encode_documents([title])[0])


@pytest.fixture(params=["edge", "client"])
def store(request, tmp_path):
    if request.param == "edge":
        s = EdgeVectorStore(tmp_path / "collections")
    else:
        s = ClientVectorStore(QdrantClient(":memory:"))
    s.ensure_collection(SPEC)
    s.ensure_collection(SPEC)  # idempotent
    yield s
    s.close()


def load(store):
    store.upsert("items", [
        point("a", [1, 0, 0, 0], brand="Acme", cats=("pens",), price=5, title="blue gel pen"),
        point("b", [0.9, 0.1, 0, 0], brand="Bic", cats=("pens",), price=15, title="red ballpoint pen"),
        point("c", [0, 1, 0, 0], brand="Acme", cats=("staplers",), price=25, title="heavy duty stapler"),
        point("d", [0, 0, 1, 0], brand="Max", cats=("staplers", "tools"), price=50, title="electric stapler"),
    ])


def test_upsert_is_idempotent_and_retrieve_returns_vectors(store):
    load(store)
    load(store)
    assert store.count("items") == 4
    got = {p.id: p for p in store.retrieve("items", ["a", "zzz", "c"], with_vectors=True)}
    assert set(got) == {"a", "c"}
    assert np.allclose(got["a"].vector, [1, 0, 0, 0]) and got["a"].payload["title"] == "blue gel pen"


def test_dense_search_with_filters_and_exclusions(store):
    load(store)
    hits = store.search_dense("items", np.array([1, 0, 0, 0]), 10)
    assert [h.id for h in hits][:2] == ["a", "b"]
    hits = store.search_dense("items", np.array([1, 0, 0, 0]), 10, ItemFilter(categories=("Staplers",)))
    assert {h.id for h in hits} == {"c", "d"}
    hits = store.search_dense("items", np.array([1, 0, 0, 0]), 10, ItemFilter(price_min=10, price_max=30))
    assert {h.id for h in hits} == {"b", "c"}
    hits = store.search_dense("items", np.array([1, 0, 0, 0]), 10, ItemFilter(brands=("acme",)), exclude={"a"})
    assert [h.id for h in hits] == ["c"]
    hits = store.search_dense("items", np.array([1, 0, 0, 0]), 10, ItemFilter(exclude_brands=("Acme",)))
    assert {h.id for h in hits} == {"b", "d"}


def test_sparse_bm25_search(store):
    load(store)
    hits = store.search_sparse("items", BM25.encode_query("staplers"), 10)
    assert {h.id for h in hits} == {"c", "d"}  # stemming: staplers -> stapler
    hits = store.search_sparse("items", BM25.encode_query("gel pen"), 10)
    assert hits[0].id == "a"


def test_matching_ids_delete_and_scroll(store):
    load(store)
    assert store.matching_ids("items", ["a", "c", "nope"], None) == {"a", "c"}
    assert store.matching_ids("items", ["a", "c"], ItemFilter(categories=("pens",))) == {"a"}
    store.delete("items", ["a"])
    assert store.matching_ids("items", ["a", "b"], None) == {"b"}
    seen, offset = [], None
    while True:
        page, offset = store.scroll("items", limit=2, offset=offset)
        seen += [p.id for p in page]
        if offset is None:
            break
    assert sorted(seen) == ["b", "c", "d"]
    ids, offset = store.scroll_ids("items", limit=10, flt=ItemFilter(categories=("staplers",)))
    assert sorted(ids) == ["c", "d"] and offset is None
    first, offset = store.scroll_ids("items", limit=2)
    rest, end = store.scroll_ids("items", limit=2, offset=offset)
    assert len(first) == 2 and offset is not None and end is None and sorted(first + rest) == ["b", "c", "d"]


def test_collections_lifecycle(store):
    store.ensure_collection(CollectionSpec("other", dim=4))
    assert {"items", "other"} <= set(store.collections())
    store.drop_collection("other")
    assert "other" not in store.collections()


def test_edge_store_persists_across_reopen(tmp_path):
    s = EdgeVectorStore(tmp_path / "c")
    s.ensure_collection(SPEC)
    load(s)
    s.optimize("items")
    s.close()
    again = EdgeVectorStore(tmp_path / "c")
    assert again.count("items") == 4
    assert again.search_dense("items", np.array([0, 0, 1, 0]), 1)[0].id == "d"
    again.close()


@pytest.mark.parametrize("kind", ["edge", "client"])
def test_the_same_writes_give_the_same_bm25_scores_to_the_last_digit(kind, demo_items, tmp_path):
    # Near-ties reorder on the last digit of a score, and with them lists and evaluations.
    from encoders.text import item_text

    texts = [item_text(item) for item in demo_items]
    rng = np.random.default_rng(0)
    points = [StoredPoint(item["id"], {"title": item["title"]}, rng.normal(size=4).astype(np.float32), sparse)
              for item, sparse in zip(demo_items, BM25.encode_documents(texts))]
    answers = []
    for n in range(3):
        store = (EdgeVectorStore(tmp_path / str(n)) if kind == "edge" else ClientVectorStore(QdrantClient(":memory:")))
        store.ensure_collection(SPEC)
        store.upsert("items", points)
        answers.append([[(h.id, h.score) for h in store.search_sparse("items", BM25.encode_query(text[:80]), 20)]
                        for text in texts[:100]])
        store.close()
    assert all(len(hits) > 1 for hits in answers[0])
    assert answers[1] == answers[0] and answers[2] == answers[0]
