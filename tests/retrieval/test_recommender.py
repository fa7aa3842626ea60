"""Behaviour of the recommend pipeline on the demo catalogue, with the real encoder."""

from collections import Counter

import pytest

from retrieval.pipeline.request import RecommendRequest
from retrieval.storage.records import InvalidRecord
from retrieval.storage.vector_store import ItemFilter
from tests.conftest import category_of


def ids_by_category(engine, category):
    points, _ = engine.store.scroll("items", limit=1000, flt=ItemFilter(categories=(category,)))
    return sorted(p.id for p in points)


def categories(result):
    return Counter(category_of(i.payload) for i in result.items)


def test_new_user_who_clicks_three_staplers_gets_mostly_staplers_next(engine):
    before = engine.recommender.recommend(RecommendRequest(user_id="new", k=10))
    assert before.profile == "none" and before.sources == ["popular"]
    staplers = ids_by_category(engine, "Staplers")[:3]
    engine.profiles.record([{"user_id": "new", "type": "click", "item_id": i} for i in staplers])
    after = engine.recommender.recommend(RecommendRequest(user_id="new", k=10))
    assert after.profile == "stored"
    assert categories(after)["Staplers"] >= 7
    assert not set(staplers) & {i.id for i in after.items}  # seen items are excluded


def test_profile_follows_the_latest_behaviour(engine):
    pens = ids_by_category(engine, "Pens")[:3]
    chairs = ids_by_category(engine, "Office Chairs")[:4]
    engine.profiles.record([{"user_id": "u", "type": "click", "item_id": i} for i in pens])
    assert categories(engine.recommender.recommend(RecommendRequest(user_id="u")))["Pens"] >= 6
    engine.profiles.record([{"user_id": "u", "type": "purchase", "item_id": i} for i in chairs])
    shifted = categories(engine.recommender.recommend(RecommendRequest(user_id="u")))
    assert shifted["Office Chairs"] > shifted["Pens"]


def test_cold_user_with_only_stated_preferences(engine):
    engine.profiles.set_preferences("onboarded", "noise cancelling headphones for calls", {})
    result = engine.recommender.recommend(RecommendRequest(user_id="onboarded"))
    assert result.profile == "stored"
    assert categories(result)["Headphones"] >= 8


def test_cold_start_query_only(engine):
    result = engine.recommender.recommend(RecommendRequest(query="dimmable LED lamp for my desk"))
    assert categories(result)["Desk Lamps"] >= 8
    assert {"dense_query", "lexical"} <= set(result.sources)


def test_item_ingested_a_second_ago_is_recommended_and_has_similar_items(engine):
    engine.catalogue.upsert([{"id": "brand-new", "title": "Swingline Zero-Jam 9000 heavy-duty stapler, black",
                              "categories": ["Office", "Staplers"], "brand": "Swingline", "price": 39.0,
                              "description": "A heavy-duty stapler that never jams, staples 100 sheets."}])
    similar = engine.catalogue.similar("brand-new", k=5)
    assert [h.id for h in similar] and all(h.id in ids_by_category(engine, "Staplers") for h in similar)
    # A user with staplers history (collaborative signal exists for them) still sees the cold item.
    others = ids_by_category(engine, "Staplers")[:6]
    for n, item in enumerate(others[:3]):
        engine.profiles.record([{"user_id": f"peer{n}", "type": "click", "item_id": i} for i in others[:4]])
    result = engine.recommender.recommend(RecommendRequest(query="heavy-duty stapler that does not jam", k=5))
    top = [i.id for i in result.items]
    assert "brand-new" in top
    cold = next(i for i in result.items if i.id == "brand-new")
    assert "collaborative" not in cold.trace.sources


def test_filters_are_hard(engine):
    flt = ItemFilter(categories=("Keyboards", "Mice"), brands=("logitech",), price_min=20, price_max=120)
    engine.profiles.record([{"user_id": "f", "type": "click", "item_id": i}
                            for i in ids_by_category(engine, "Monitors")[:3]])
    for req in (RecommendRequest(user_id="f", item_filter=flt, k=20),
                RecommendRequest(query="4K monitor", item_filter=flt, k=20),
                RecommendRequest(item_filter=flt, k=20)):
        result = engine.recommender.recommend(req)
        assert result.items
        for item in result.items:
            p = item.payload
            assert category_of(p) in ("Keyboards", "Mice") and p["brand"] == "Logitech"
            assert 20 <= p["price"] <= 120


def test_history_only_and_combined_requests(engine):
    mice = ids_by_category(engine, "Mice")[:2]
    result = engine.recommender.recommend(RecommendRequest(history=mice))
    assert result.profile == "computed" and categories(result)["Mice"] >= 7
    assert not set(mice) & {i.id for i in result.items}
    kept = engine.recommender.recommend(RecommendRequest(history=mice, exclude_seen=False, k=20))
    assert set(mice) <= {i.id for i in kept.items}
    # Taken literally (no query understanding) the query and the history mix...
    mixed = engine.recommender.recommend(RecommendRequest(history=mice, query="wireless keyboard",
                                                          understand_query=False))
    assert categories(mixed)["Keyboards"] >= 1 and categories(mixed)["Mice"] >= 1
    # ...understood, "keyboard" names a catalogue category: the user asked for keyboards.
    asked = engine.recommender.recommend(RecommendRequest(history=mice, query="wireless keyboard"))
    assert categories(asked)["Keyboards"] == 10 and asked.interpreted["constraints"] == {"categories": ["Keyboards"]}


def test_bad_requests_name_the_field(engine):
    with pytest.raises(InvalidRecord) as err:
        engine.recommender.recommend(RecommendRequest(k=0))
    assert err.value.field == "k"
    with pytest.raises(InvalidRecord) as err:
        engine.recommender.recommend(RecommendRequest(history=["demo-000001", "nope"]))
    assert err.value.field == "history[1]"
    with pytest.raises(InvalidRecord) as err:
        engine.recommender.recommend(RecommendRequest(item_filter=ItemFilter(price_min=9, price_max=1)))
    assert err.value.field == "filters.price_min"


def test_restart_keeps_items_events_and_profiles(make_engine, demo_points, tmp_path):
    first = make_engine(tmp_path / "d")
    first.catalogue.write(demo_points)
    staplers = ids_by_category(first, "Staplers")[:3]
    first.profiles.record([{"user_id": "r", "type": "click", "item_id": i} for i in staplers])
    first.profiles.set_preferences("r", "staplers", {})
    expected = [i.id for i in first.recommender.recommend(RecommendRequest(user_id="r")).items]
    first.close()
    second = make_engine(tmp_path / "d")
    assert second.catalogue.count() == len(demo_points)
    assert second.profiles.summary("r")["total_events"] == 3
    assert [i.id for i in second.recommender.recommend(RecommendRequest(user_id="r")).items] == expected


def test_profiles_behind_the_log_are_repaired_at_start(make_engine, demo_points, tmp_path):
    first = make_engine(tmp_path / "d")
    first.catalogue.write(demo_points)
    lamps = ids_by_category(first, "Desk Lamps")[:3]
    # As if the process died after the log commit and before the profile write.
    from retrieval.storage.records import parse_event
    first.log.append([parse_event({"user_id": "crash", "type": "click", "item_id": i}, 1.8e9) for i in lamps])
    assert first.profiles.vector("crash") is None
    first.close()
    second = make_engine(tmp_path / "d")
    assert second.profiles.vector("crash") is not None
    assert categories(second.recommender.recommend(RecommendRequest(user_id="crash")))["Desk Lamps"] >= 7


def test_forget_user_removes_everything(engine):
    items = ids_by_category(engine, "Pens")[:3]
    engine.profiles.record([{"user_id": "gone", "type": "click", "item_id": i} for i in items])
    engine.profiles.record([{"user_id": "peer", "type": "click", "item_id": i} for i in items])
    engine.profiles.set_preferences("gone", "pens", {"x": 1})
    assert engine.profiles.forget("gone")
    assert engine.profiles.summary("gone") is None and engine.profiles.vector("gone") is None
    assert engine.log.user_events("gone") == []
    assert all("gone" not in engine.index._item_users.get(i, set()) for i in items)
    assert not engine.profiles.forget("gone")
    assert engine.recommender.recommend(RecommendRequest(user_id="gone")).profile == "none"


def test_deleted_item_is_never_recommended(engine):
    pens = ids_by_category(engine, "Pens")
    engine.profiles.record([{"user_id": "p", "type": "click", "item_id": i} for i in pens[:3]])
    engine.profiles.record([{"user_id": "q", "type": "click", "item_id": i} for i in pens[:4]])
    target = pens[3]
    assert engine.catalogue.delete(target)
    result = engine.recommender.recommend(RecommendRequest(user_id="p", k=50))
    assert target not in {i.id for i in result.items}
    assert engine.catalogue.get(target) is None and not engine.catalogue.delete(target)


def test_what_people_take_is_a_prior_only_for_preference_only_profiles(engine):
    """Stated preferences alone that name a category get what the people who took it took
    (``interest``); those that name none get popularity (``popularity_prior``); nobody else gets
    either."""
    engine.profiles.set_preferences("p", "ergonomic office chair", {})
    engine.profiles.set_preferences("q", "ergonomic and comfortable for long days", {})
    for user in ("p", "q"):  # nobody has taken anything yet
        assert not {"interest", "popularity_prior"} & set(engine.recommender.recommend(RecommendRequest(user_id=user)).sources)
    chairs = ids_by_category(engine, "Office Chairs")
    for n in range(3):  # now some chairs are popular
        engine.profiles.record([{"user_id": f"buyer{n}", "type": "purchase", "item_id": chairs[0]}])
    result = engine.recommender.recommend(RecommendRequest(user_id="p"))
    assert "interest" in result.sources and "popularity_prior" not in result.sources
    assert categories(result)["Office Chairs"] >= 8
    # What the people who took chairs took is in; the chairs nobody took yet are judged by their
    # text alone (the interest source has no opinion about them), so the best matches stay.
    taken = next(i for i in result.items if i.id == chairs[0])
    assert "interest" in taken.trace.sources and not taken.trace.no_opinion
    assert all("interest" in i.trace.no_opinion for i in result.items if i.id != chairs[0])
    unnamed = engine.recommender.recommend(RecommendRequest(user_id="q")).sources
    assert "popularity_prior" in unnamed and "interest" not in unnamed
    engine.profiles.record([{"user_id": "p", "type": "click", "item_id": chairs[1]}])
    for req in (RecommendRequest(user_id="p"), RecommendRequest(query="office chair")):
        assert not {"interest", "popularity_prior"} & set(engine.recommender.recommend(req).sources)


def test_disliked_items_stay_out_even_when_seen_items_are_allowed(engine):
    mice = ids_by_category(engine, "Mice")
    engine.profiles.record([{"user_id": "d", "type": "click", "item_id": i} for i in mice[:3]]
                           + [{"user_id": "d", "type": "dislike", "item_id": mice[3]}])
    shown = {i.id for i in engine.recommender.recommend(RecommendRequest(user_id="d", k=40, exclude_seen=False)).items}
    assert set(mice[:3]) <= shown and mice[3] not in shown
    merged = engine.recommender.recommend(RecommendRequest(user_id="d", history=[mice[5], mice[4], mice[5]], k=20))
    assert merged.profile == "computed" and not {mice[4], mice[5], *mice[:4]} & {i.id for i in merged.items}


def test_a_brand_written_after_the_first_query_is_understood_without_a_rescan(engine):
    first = engine.catalogue.facets()
    engine.recommender.recommend(RecommendRequest(query="a stapler"))
    engine.catalogue.upsert([{"id": "zz-1", "title": "Zorblax quiet stapler", "brand": "Zorblax",
                              "categories": ["Office", "Staplers"], "price": 12.0}])
    facets = engine.catalogue.facets()
    assert facets is not first and "zorblax" in facets.brands and "zorblax" not in first.brands
    result = engine.recommender.recommend(RecommendRequest(query="a stapler by Zorblax"))
    assert result.interpreted["constraints"]["brands"] == ["Zorblax"] and [i.id for i in result.items] == ["zz-1"]
