"""Fusion weights per request type (``RecommendConfig.request_weights``): what a request has to go
on decides its type, and the full pipeline fuses each type at its own weights."""

from dataclasses import replace

import numpy as np
import pytest

from retrieval.pipeline.config import RecommendConfig
from retrieval.pipeline.context import RecommendContext, build_context, request_type
from retrieval.pipeline.fusion import SourceResult
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.pipeline.sources import rank_hits

VECTOR = np.ones(2, dtype=np.float32)


@pytest.mark.parametrize("req, ctx, expected", [
    (RecommendRequest(user_id="u"), RecommendContext(pool=1, history=["a"], profile_vector=VECTOR), "history"),
    (RecommendRequest(history=["a"]), RecommendContext(pool=1, history=["a"], profile_vector=VECTOR), "session"),
    (RecommendRequest(user_id="u"), RecommendContext(pool=1, profile_vector=VECTOR, preference_text="pens"),
     "preferences"),
    (RecommendRequest(user_id="u", query="pens"), RecommendContext(pool=1, history=["a"], query_text="pens"), "query"),
    (RecommendRequest(user_id="u"), RecommendContext(pool=1), "none"),
])
def test_request_type_is_what_the_request_has_to_go_on(req, ctx, expected):
    assert request_type(req, ctx) == expected


class Listing:
    """A source that lists one item and counts its calls."""

    def __init__(self, name: str, weight: float = 1.0):
        self.name, self.weight, self.calls = name, weight, 0

    def candidates(self, ctx):
        self.calls += 1
        return SourceResult(self.name, [(f"{self.name}-item", 1.0)], self.weight)


def recommender_with(request_weights: dict) -> Recommender:
    from types import SimpleNamespace

    recommender = Recommender.__new__(Recommender)  # gather reads the config, sources and categories only
    recommender.config = RecommendConfig(request_weights=request_weights, preference_popularity_prior=0.0)
    recommender.sources = {name: Listing(name, w) for name, w in
                           (("dense_profile", 0.5), ("lexical", 1.0), ("collaborative", 1.0))}
    recommender.queries = SimpleNamespace(stated_categories=lambda text: ())
    recommender.off = frozenset()
    return recommender


def test_the_full_pipeline_fuses_each_request_type_at_its_own_weights():
    recommender = recommender_with({"preferences": {"dense_profile": 0.0, "lexical": 2.0},
                                    "history": {"collaborative": 1.5}})
    prefs = RecommendContext(pool=10, profile_vector=VECTOR, preference_text="pens", request_type="preferences")
    got = {r.name: r.weight for r in recommender.gather(prefs, ReplayOptions(), [])}
    assert got == {"lexical": 2.0, "collaborative": 1.0}  # weight 0: the source does not even run
    assert recommender.sources["dense_profile"].calls == 0
    history = RecommendContext(pool=10, history=["a"], request_type="history")
    assert {r.name: r.weight for r in recommender.gather(history, ReplayOptions(), [])} == {
        "dense_profile": 0.5, "lexical": 1.0, "collaborative": 1.5}
    session = RecommendContext(pool=10, history=["a"], request_type="session")  # no weights of its own
    assert {r.name: r.weight for r in recommender.gather(session, ReplayOptions(), [])} == {
        "dense_profile": 0.5, "lexical": 1.0, "collaborative": 1.0}
    # A request that names its sources keeps them at their own weights.
    named = recommender.gather(prefs, ReplayOptions(sources=("dense_profile",)), [])
    assert [(r.name, r.weight) for r in named] == [("dense_profile", 0.5)]


def test_a_source_at_weight_0_in_every_situation_is_not_asked_unless_a_request_type_turns_it_on():
    from retrieval.pipeline.config import source_weights
    from retrieval.pipeline.recommender import sources_off

    recommender = recommender_with({"preferences": {"collaborative": 2.0}})
    weights = source_weights({"collaborative": 0.0, "lexical": 0.0, "lexical_history": 0.5})  # BM25 still reads history titles
    recommender.off = sources_off(weights, weights)
    assert recommender.off == {"collaborative"}
    history = RecommendContext(pool=10, history=["a"], request_type="history")
    assert {r.name for r in recommender.gather(history, ReplayOptions(), [])} == {"dense_profile", "lexical"}
    assert recommender.sources["collaborative"].calls == 0
    prefs = RecommendContext(pool=10, profile_vector=VECTOR, preference_text="pens", request_type="preferences")
    assert {r.name: r.weight for r in recommender.gather(prefs, ReplayOptions(), [])}["collaborative"] == 2.0
    # Where a ranker's pool weighs it, it is asked: the pool fuses it.
    assert sources_off(weights, source_weights({})) == frozenset()


def test_a_layouts_weights_win_over_the_request_types_for_what_they_set():
    config = RecommendConfig(request_weights={"history": {"lexical": 0.5, "collaborative": 1.5},
                                              "preferences": {"lexical": 2.0, "dense_profile": 0.25}})
    tuned = config.with_weights({"lexical_history": 0.7, "dense_profile_without_query": 1.0})
    assert tuned.request_weights == {"history": {"collaborative": 1.5}, "preferences": {"lexical": 2.0}}
    assert config.with_weights(None) is config


def test_defaults_set_weights_for_known_request_types_and_sources_only():
    from retrieval.pipeline.config import REQUEST_TYPES, SOURCE_NAMES

    for kind, weights in RecommendConfig().request_weights.items():
        assert kind in REQUEST_TYPES
        assert set(weights) <= {*SOURCE_NAMES, "popularity_prior"} and min(weights.values()) >= 0


@pytest.mark.slow
def test_a_preference_only_request_gets_bm25_over_its_preference_text(engine):
    text = "ergonomic office chair with lumbar support"
    engine.profiles.set_preferences("p", text, {})
    recommender = engine.recommender
    result = recommender.recommend(RecommendRequest(user_id="p", k=10, diversity=0.0))
    assert result.profile == "stored" and "lexical" in result.sources
    catalogue = engine.catalogue
    bm25 = rank_hits(catalogue.store.search_sparse(catalogue.collection, catalogue.bm25.encode_query(text), 10))
    lexical = recommender.recommend(RecommendRequest(user_id="p", k=10, diversity=0.0),
                                    ReplayOptions(sources=("lexical",)))
    assert [i.id for i in lexical.items] == [i for i, _ in bm25]
    # In the fused list, BM25's own ranks are those of the preference text's search.
    ranks = {i: n for n, (i, _) in enumerate(bm25, start=1)}
    traced = [(item.id, item.trace.sources["lexical"].rank) for item in result.items if "lexical" in item.trace.sources]
    assert traced and all(ranks.get(i, rank) == rank for i, rank in traced)


def test_stated_categories_are_the_catalogues_names_in_free_text():
    from types import SimpleNamespace

    from retrieval.query.understanding import QueryUnderstanding
    from retrieval.state.facets import Facets

    facets = Facets(categories={"office": "Office", "staplers": "Staplers", "gel pens": "Gel Pens", "pens": "Pens"})
    understanding = QueryUnderstanding(SimpleNamespace(facets=lambda: facets), None, None)
    assert understanding.stated_categories("I like a sturdy stapler and smooth gel pens") == ("Staplers", "Gel Pens")
    assert understanding.stated_categories("quiet things for a small desk") == ()
    # In the order the sentence names them, whatever the lengths of the names.
    assert understanding.stated_categories("Interested in: staplers, office, gel pens") == ("Staplers", "Office", "Gel Pens")
    assert understanding.stated_categories("mostly staplers, then pens") == ("Staplers", "Pens")


@pytest.mark.slow
def test_a_preference_only_request_takes_popularity_within_the_categories_it_names(engine):
    """Where the interest source is off (or has nothing), the prior of a preference-only request is
    what people take among the items of the categories the preferences name, not across the
    catalogue; the popularity baseline, a request whose preferences name no category, and a
    pipeline configured without it (``preference_prior_within_categories=False``) keep the
    catalogue's. As served, the interest source answers in the prior's place."""
    points = engine.catalogue.get_many([f"demo-{n:06d}" for n in range(360)])
    staplers = sorted(i for i, p in points.items() if p.payload["categories"][-1] == "Staplers")
    others = sorted(i for i, p in points.items() if p.payload["categories"][-1] != "Staplers")
    taken = {others[0]: 6, others[1]: 5, staplers[7]: 3, staplers[3]: 2}  # item: how many users took it
    engine.profiles.record([{"user_id": f"u{n}", "type": "purchase", "item_id": item}
                            for item, users in taken.items() for n in range(users)])
    engine.profiles.set_preferences("p", "Interested in: Staplers", {})
    engine.profiles.set_preferences("q", "something sturdy and quiet", {})

    def gathered(recommender, user_id):
        req = RecommendRequest(user_id=user_id, k=20)
        ctx, _ = build_context(req, ReplayOptions(), recommender.profiles, recommender.catalogue, recommender.config)
        assert ctx.request_type == "preferences"
        # What the fusion reads: a source at weight 0 is dropped there.
        return {r.name: [i for i, _ in r.ranked] for r in recommender.gather(ctx, ReplayOptions(), []) if r.weight > 0}

    def prior(recommender, user_id):
        found = gathered(recommender, user_id)
        assert set(found) == {"dense_profile", "lexical", "popularity_prior"}
        return found["popularity_prior"]

    assert set(gathered(engine.recommender, "p")) == {"dense_profile", "lexical", "interest"}
    assert set(gathered(engine.recommender, "q")) == {"dense_profile", "lexical", "popularity_prior"}
    within = Recommender(engine.catalogue, engine.profiles, engine.recommender.popular.index,
                         replace(engine.recommender.config,
                                 weights={**engine.recommender.config.weights, "interest": 0.0}))
    across = Recommender(within.catalogue, within.profiles, within.popular.index,
                         replace(within.config, preference_prior_within_categories=False))
    assert prior(within, "p") == [staplers[7], staplers[3]]
    # The interest source is an ordinary source: left out of the sources, the prior serves too.
    left_out = Recommender(within.catalogue, within.profiles, within.popular.index,
                           replace(engine.recommender.config,
                                   sources=tuple(s for s in engine.recommender.config.sources if s != "interest")))
    assert prior(left_out, "p") == [staplers[7], staplers[3]]
    assert prior(across, "p")[:2] == [others[0], others[1]]
    assert prior(within, "q")[:2] == [others[0], others[1]]  # names no category
    baseline = within.recommend(RecommendRequest(user_id="p", k=5, diversity=0.0), ReplayOptions(sources=("popular",)))
    assert [i.id for i in baseline.items][:2] == [others[0], others[1]]
