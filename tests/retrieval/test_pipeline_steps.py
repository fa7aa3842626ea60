"""Each named step of the recommend pipeline on its own (``retrieval.pipeline.recommender``)."""

from types import SimpleNamespace

import numpy as np
import pytest

from retrieval.pipeline.config import RecommendConfig
from retrieval.pipeline.context import RecommendContext, build_context
from retrieval.pipeline.fusion import FusedCandidate, SourceRank, SourceResult
from retrieval.pipeline.recommender import (
    ListShape,
    RankedList,
    apply_diversity,
    apply_query,
    apply_reranking,
    choose_ranker,
    explain_drivers,
    hydrate,
    validate,
)
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.query.parser import Anchor, ParsedQuery
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import LoadedReranker, Ranked, Reranking
from retrieval.storage.records import InvalidRecord
from retrieval.storage.vector_store import ItemFilter, StoredPoint
from tests.retrieval.test_rank_features import synthetic


class FakeCatalogue:
    """Just what validate and hydrate read."""

    def __init__(self, points: dict[str, StoredPoint]):
        self.points = points
        self.asked_vectors: list[bool] = []

    def existing(self, ids):
        return {i for i in ids if i in self.points}

    def get_many(self, ids, with_vectors=False):
        self.asked_vectors.append(with_vectors)
        return {i: self.points[i] for i in ids if i in self.points}


def point(item_id: str, category: str = "Pens", vector=(1.0, 0.0)) -> StoredPoint:
    return StoredPoint(item_id, {"id": item_id, "title": item_id, "categories": [category]},
                       np.asarray(vector, dtype=np.float32))


def fused(*ids: str) -> list[FusedCandidate]:
    return [FusedCandidate(i, 1.0 / (n + 1), {"dense_profile": SourceRank(n + 1, 0.9, 1.0 / (61 + n))})
            for n, i in enumerate(ids)]


@pytest.mark.parametrize("req, options, field", [
    (RecommendRequest(k=0), ReplayOptions(), "k"),
    (RecommendRequest(item_filter=ItemFilter(price_min=-1)), ReplayOptions(), "filters.price_min"),
    (RecommendRequest(item_filter=ItemFilter(price_min=5, price_max=1)), ReplayOptions(), "filters.price_min"),
    (RecommendRequest(query="x" * 2001), ReplayOptions(), "query"),
    (RecommendRequest(history=["a", "nope"]), ReplayOptions(), "history[1]"),
    (RecommendRequest(diversity=1.5), ReplayOptions(), "diversity"),
    (RecommendRequest(max_per_category=0), ReplayOptions(), "max_per_category"),
    (RecommendRequest(), ReplayOptions(sources=("dense_profile", "psychic")), "sources"),
])
def test_validate_names_the_bad_field(req, options, field):
    with pytest.raises(InvalidRecord) as err:
        validate(req, options, FakeCatalogue({"a": point("a")}), {"dense_profile", "popular"})
    assert err.value.field == field


def test_validate_accepts_a_good_request():
    validate(RecommendRequest(history=["a"], k=100, diversity=0, max_per_category=1),
             ReplayOptions(sources=("popular",)), FakeCatalogue({"a": point("a")}), {"popular"})


def test_apply_query_narrows_the_filter_and_keeps_the_anchor_in_mind():
    parsed = ParsedQuery(text="like the red pen under $5", semantic="pen", price_max=5.0,
                         anchor=Anchor("red", "Red pen", 4.0))
    req = apply_query(RecommendRequest(query=parsed.text, history=["a"], item_filter=ItemFilter(brands=("Bic",))),
                      parsed)
    assert req.query == "pen" and req.history == ["a", "red"]
    assert req.item_filter == ItemFilter(brands=("Bic",), price_max=5.0)


def test_choose_ranker_applies_it_to_history_requests_without_a_query_only():
    ranker = SimpleNamespace(version="v1")
    notes: list[str] = []
    assert choose_ranker(ranker, RecommendContext(pool=10, history=["a"]), notes) is ranker and not notes
    assert choose_ranker(ranker, RecommendContext(pool=10, history=["a"], query_text="pen"), notes) is None
    assert choose_ranker(ranker, RecommendContext(pool=10), notes) is None
    assert len(notes) == 2 and "v1 not used" in notes[0]
    assert choose_ranker(None, RecommendContext(pool=10, history=["a"]), notes) is None


def test_list_shape_reads_the_defaults_and_the_request():
    config = RecommendConfig(diversity=0.3, reranked_diversity=0.0, rerank_candidates=50, diversity_pool=50)
    assert ListShape.of(RecommendRequest(k=10), config, reranked=False) == ListShape(0.3, True, 30)
    assert ListShape.of(RecommendRequest(k=10), config, reranked=True) == ListShape(0.0, False, 50)
    assert ListShape.of(RecommendRequest(k=10, diversity=0), config, reranked=False) == ListShape(0.0, False, 10)
    capped = ListShape.of(RecommendRequest(k=30, diversity=0, max_per_category=2), config, reranked=False)
    assert capped == ListShape(0.0, True, 50)


def test_hydrate_takes_the_top_and_drops_items_deleted_since_retrieval():
    catalogue = FakeCatalogue({"a": point("a"), "c": point("c")})
    top, points = hydrate(catalogue, fused("a", "b", "c", "d"), ListShape(0.0, False, 3), with_vectors=True)
    assert [c.id for c in top] == ["a", "c"] and set(points) == {"a", "c"}
    assert catalogue.asked_vectors == [True]


def test_apply_reranking_takes_the_rankers_order_and_traces_it():
    ranked = RankedList.from_fused(fused("a", "b", "c"))
    order = [Ranked("c", 1, 0.9, False), Ranked("b", 2, 0.9, True), Ranked("a", 3, 0.1, False)]
    apply_reranking(ranked, Reranking(order, np.zeros((3, 1))), {"a": 1, "b": 2, "c": 3})
    assert ranked.ids == ["c", "b", "a"] and ranked.scores["a"] == 0.1
    assert ranked.traces["c"].rerank.retrieval_rank == 3 and ranked.traces["b"].rerank.kept_place
    assert ranked.traces["a"].sources["dense_profile"].rank == 1  # retrieval's evidence is kept


def test_apply_diversity_moves_a_near_copy_down_and_traces_it():
    points = {"a": point("a", vector=(1, 0)), "b": point("b", vector=(1, 0.01)), "c": point("c", vector=(0, 1))}
    top = fused("a", "b", "c")
    ranked = RankedList.from_fused(top)
    moved = apply_diversity(ranked, top, points, ListShape(0.9, True, 3), RecommendRequest(k=3), reranked=False)
    assert ranked.ids == ["a", "c", "b"] and moved == 2
    assert ranked.traces["b"].diversity.relevance_rank == 2 and ranked.traces["b"].diversity.rank == 3


def test_explain_drivers_names_evidence_for_items_the_ranker_moved_only():
    x, y = synthetic(n_lists=60)
    model = RankingModel.fit(x, y)
    features = x[:3]
    ranked = RankedList.from_fused(fused("a", "b", "c"))
    order = [Ranked("c", 1, 0.9, False), Ranked("b", 2, 0.5, True), Ranked("a", 3, 0.1, False)]
    reranking = Reranking(order, features)
    apply_reranking(ranked, reranking, {"a": 1, "b": 2, "c": 3})
    explain_drivers(ranked, LoadedReranker("v1", model, None, {}), reranking, {"a": 1, "b": 2, "c": 3})
    assert ranked.traces["b"].rerank.drivers == []  # kept its place: the ranker did not move it
    for item_id in ("a", "c"):
        assert all(d.evidence and isinstance(d.effect, float) for d in ranked.traces[item_id].rerank.drivers)


@pytest.mark.slow
def test_build_context_and_gather_on_a_real_engine(engine, demo_items):
    ids = [demo_items[0]["id"], demo_items[1]["id"]]
    engine.profiles.record([{"user_id": "u", "type": "click", "item_id": i} for i in ids])
    # Someone else went on from the same items: the collaborative source has neighbours to offer.
    engine.profiles.record([{"user_id": "v", "type": "click", "item_id": i["id"]} for i in demo_items[:4]])
    recommender = engine.recommender
    ctx, profile = build_context(RecommendRequest(user_id="u"), ReplayOptions(), engine.profiles, engine.catalogue,
                                 recommender.config)
    assert profile == "stored" and ctx.history == ids and ctx.exclude == set(ids)
    assert ctx.history_titles[0] == demo_items[1]["title"]  # the newest first
    without, profile = build_context(RecommendRequest(user_id="u"), ReplayOptions(without_items=(ids[1],)),
                                     engine.profiles, engine.catalogue, recommender.config)
    assert profile == "computed" and without.history == ids[:1]
    notes: list[str] = []
    results = recommender.gather(ctx, ReplayOptions(), notes)
    assert {r.name for r in results} == {"dense_profile", "lexical", "collaborative"} and not notes
    only = recommender.gather(ctx, ReplayOptions(sources=("popular",)), notes)
    assert [r.name for r in only] == ["popular"]
    fused_list = recommender.fuse(results, ranker_pool=False)
    assert fused_list and all(set(c.sources) <= {r.name for r in results} for c in fused_list)


def test_fuse_reweights_the_pool_a_ranker_reorders_only():
    from retrieval.pipeline.recommender import Recommender

    recommender = Recommender.__new__(Recommender)  # fuse reads only the config and the pool weights
    recommender.config = RecommendConfig()
    recommender.pool_weights = {"lexical": 0.0}
    results = [SourceResult("lexical", [("a", 1.0)]), SourceResult("dense_profile", [("b", 1.0)])]
    assert {c.id for c in recommender.fuse(results, ranker_pool=False)} == {"a", "b"}
    assert {c.id for c in recommender.fuse(results, ranker_pool=True)} == {"b"}


def test_ranking_notes_say_which_model_reordered_the_list_or_why_none_did():
    from retrieval.pipeline.recommender import ranking_notes

    model = SimpleNamespace(version="v7", description="learned ranker")
    shape = ListShape(0.0, False, 50)
    assert ranking_notes(RecommendRequest(), model, model, 50, shape) == [
        "reranked the top 50 with learned ranker v7; diversity 0, the default for reranked lists "
        "(ask for more with 'diversity')"]
    assert ranking_notes(RecommendRequest(diversity=0.2), model, model, 50, shape) == [
        "reranked the top 50 with learned ranker v7"]
    assert ranking_notes(RecommendRequest(rerank=False), None, model, 50, shape) == [
        "reranking turned off by the request"]
    assert ranking_notes(RecommendRequest(), None, None, 50, shape) == [
        "no reranker trained yet: ranked by fused retrieval scores"]
    assert ranking_notes(RecommendRequest(), None, model, 50, shape) == []  # served, but not for this request


def test_category_items_are_read_once_per_catalogue_change_and_a_large_category_from_the_most_taken():
    from retrieval.pipeline.sources import CATEGORY_ITEMS, CategoryItems

    reads = []

    class Store:
        def scroll_ids(self, collection, limit, offset=None, flt=None):
            reads.append(flt.categories)
            ids = {"Pens": ["a", "b"], "Paper": [f"p{n}" for n in range(CATEGORY_ITEMS + 1)]}[flt.categories[0]]
            return ids[:limit], ("next" if len(ids) > limit else None)

        def matching_ids(self, collection, ids, flt):
            return {i for i in ids if i.startswith("p")}

    catalogue = SimpleNamespace(store=Store(), collection="items", generation=0)
    index = SimpleNamespace(popular=lambda n: [("a", 9), ("p3", 5), ("p1", 2)])
    items = CategoryItems(catalogue, index)
    assert items.ids("Pens") == ["a", "b"] and items.ids("Pens") == ["a", "b"] and len(reads) == 1
    catalogue.generation += 1  # a catalogue write
    assert items.ids("Pens") == ["a", "b"] and len(reads) == 2
    # Too large to read whole: those of the most taken items in it, in that order, on every call.
    assert items.ids("Paper") == ["p3", "p1"] and items.ids("Paper") == ["p3", "p1"] and len(reads) == 4


def test_category_items_follow_deletes_on_a_real_catalogue(engine, demo_items):
    from retrieval.pipeline.sources import CategoryItems

    items = CategoryItems(engine.catalogue, engine.index)
    gone, category = demo_items[0]["id"], demo_items[0]["categories"][-1]
    before = items.ids(category)
    assert gone in before and items.ids(category) is before  # kept while nothing changes
    assert engine.catalogue.delete(gone)
    assert sorted(items.ids(category)) == sorted(i for i in before if i != gone)
