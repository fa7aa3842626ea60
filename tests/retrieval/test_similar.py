"""Hybrid similar items (retrieval/pipeline/similar.py) on the demo catalogue, with the real encoder."""

import pytest

from retrieval.pipeline.similar import SimilarItems
from retrieval.storage.vector_store import ItemFilter
from tests.retrieval.test_recommender import ids_by_category


def take_together(engine, groups: list[list[str]], prefix: str = "u") -> None:
    """One user per group, who took the group's items in order."""
    engine.profiles.record([{"user_id": f"{prefix}{n}", "type": "purchase", "item_id": i}
                            for n, group in enumerate(groups) for i in group])


@pytest.fixture
def keyboards(engine):
    """A keyboard, its text-only neighbours (nearest first), and a desk lamp."""
    query = ids_by_category(engine, "Keyboards")[0]
    text_order = [h.id for h in engine.catalogue.similar(query, k=29)]
    return query, text_order, ids_by_category(engine, "Desk Lamps")[0]


def rank(result, item_id):
    ids = [i.id for i in result.items]
    return ids.index(item_id) if item_id in ids else None


def test_co_taken_item_outranks_a_text_near_one(engine, keyboards):
    query, text_order, _ = keyboards
    nearest, far = text_order[0], text_order[14]
    # Five people took the query with a keyboard text calls far; every keyboard is taken by someone
    # (so the collaborative source knows the near one too, and has not seen it with the query).
    pens = ids_by_category(engine, "Pens")
    take_together(engine, [[query, far]] * 5 + [[k, pens[n % 5]] for n, k in enumerate(text_order)], "kb")
    result = SimilarItems(engine.catalogue, engine.index).similar(query, k=60)
    assert rank(result, far) == 0 and rank(result, nearest) is not None and rank(result, nearest) is not None
    assert rank(result, far) < rank(result, nearest)
    assert [h.id for h in engine.catalogue.similar(query, k=1)] == [nearest]  # text alone: the other way round
    top = result.items[rank(result, far)]
    assert top.sources["collaborative"].rank == 1 and "dense" in top.sources
    assert "collaborative" not in result.items[rank(result, nearest)].sources
    assert result.sources == ["collaborative", "dense", "lexical"] and not result.notes


def test_brand_new_item_gets_text_neighbours_from_its_first_second(engine):
    staplers = ids_by_category(engine, "Staplers")
    take_together(engine, [staplers[:4], staplers[2:6]])  # others have history; the new item has none
    engine.catalogue.upsert([{"id": "brand-new", "title": "Swingline Zero-Jam 9000 heavy-duty stapler, black",
                              "categories": ["Office", "Staplers"], "brand": "Swingline", "price": 39.0,
                              "description": "A heavy-duty stapler that never jams, staples 100 sheets."}])
    result = SimilarItems(engine.catalogue, engine.index).similar("brand-new", k=5)
    assert len(result.items) == 5 and all(i.id in staplers for i in result.items)
    assert result.sources == ["dense", "lexical"] and result.notes
    assert all(set(i.sources) <= {"dense", "lexical"} and i.text_similarity > 0 for i in result.items)
    # And the new item is a neighbour of the others, through text, though nobody took it.
    other = SimilarItems(engine.catalogue, engine.index).similar(staplers[0], k=40)
    new = next(i for i in other.items if i.id == "brand-new")
    assert "collaborative" in new.no_opinion and "collaborative" in other.sources


def test_filters_apply_to_every_source(engine, keyboards):
    query, _, lamp = keyboards
    # Every lamp is taken by someone, so the others are judged by the collaborative source too.
    pens = ids_by_category(engine, "Pens")
    take_together(engine, [[query, lamp]] * 3 + [[x, pens[0]] for x in ids_by_category(engine, "Desk Lamps")])
    similar = SimilarItems(engine.catalogue, engine.index)
    lamps = similar.similar(query, k=5, flt=ItemFilter(categories=("desk lamps",)))
    assert all(i.payload["categories"][-1] == "Desk Lamps" for i in lamps.items)
    assert lamps.items[0].id == lamp and "collaborative" in lamps.items[0].sources
    keyboards_only = similar.similar(query, k=10, flt=ItemFilter(categories=("Keyboards",)))
    assert lamp not in [i.id for i in keyboards_only.items]
    assert all(i.payload["categories"][-1] == "Keyboards" for i in keyboards_only.items)
    cheap = similar.similar(query, k=10, flt=ItemFilter(price_max=60.0))
    assert cheap.items and all(i.payload["price"] <= 60.0 for i in cheap.items)


def test_unknown_item_is_none_and_the_item_is_never_its_own_neighbour(engine, keyboards):
    query, _, lamp = keyboards
    take_together(engine, [[query, lamp]] * 2)
    similar = SimilarItems(engine.catalogue, engine.index)
    assert similar.similar("no-such-item") is None
    result = similar.similar(query, k=30)
    assert query not in [i.id for i in result.items] and len(result.items) == 30
    scores = [i.score for i in result.items]
    assert scores == sorted(scores, reverse=True)
