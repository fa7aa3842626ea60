"""Reranker versions and the rerank stage: only accepted models serve, and responses say which."""

import json
from dataclasses import replace

import numpy as np
import pytest

from retrieval.pipeline.diversity import diversify
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.ranking.features import NO_OPINION_COLUMN, rank_candidates
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import order_by, rank_inputs
from retrieval.registry import RerankerVersions
from retrieval.training.reranker import train_reranker
from retrieval.training.settings import TrainingSettings
from tests.conftest import TEST_DEVICE
from tests.retrieval.test_rank_features import synthetic

pytestmark = pytest.mark.slow


def save(versions, accepted, metadata=None):
    x, y = synthetic(n_lists=60)
    return versions.save(RankingModel.fit(x, y).save, metadata or {
        "accepted": accepted, "reason": "test", "ranker": {"cross_encoder": False}})


def clicks(engine, user, items):
    engine.profiles.record([{"user_id": user, "type": "click", "item_id": i} for i in items])


def test_rejected_model_is_never_served_and_accepted_one_is_reported(engine, demo_items):
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[1]["id"]])
    clicks(engine, "u2", [demo_items[1]["id"], demo_items[2]["id"]])
    assert engine.reload_reranker() is None
    rejected = save(engine.rerankers, accepted=False)
    assert engine.reload_reranker() is None
    with pytest.raises(ValueError, match="never served"):
        engine.rerankers.load(rejected)
    plain = engine.recommender.recommend(RecommendRequest(user_id="u1", k=5, diversity=0))
    assert plain.reranker is None and any("no reranker" in n for n in plain.notes)

    accepted = save(engine.rerankers, accepted=True)
    assert engine.reload_reranker() == accepted
    result = engine.recommender.recommend(RecommendRequest(user_id="u1", k=5, diversity=0))
    assert result.reranker == accepted and len(result.items) == 5
    assert any("learned ranker" in n for n in result.notes)
    # Pure relevance: the list is the ranker's order, and each item says where retrieval had it.
    assert [i.trace.rerank.rank for i in result.items] == [1, 2, 3, 4, 5]
    assert all(i.trace.rerank.retrieval_rank >= 1 for i in result.items)
    off = engine.recommender.recommend(RecommendRequest(user_id="u1", k=5, diversity=0, rerank=False))
    assert off.reranker is None and [i.id for i in off.items] == [i.id for i in plain.items]
    assert any("turned off" in n for n in off.notes)
    # A search query is outside what the ranker learned from: retrieval's order, and the note says why.
    query = engine.recommender.recommend(RecommendRequest(user_id="u1", query="quiet keyboard", k=5))
    assert query.reranker is None and any("not used" in n for n in query.notes)
    # A newer rejected model does not displace the accepted one.
    save(engine.rerankers, accepted=False)
    assert engine.reload_reranker() == accepted


def test_a_ranker_reorders_its_own_pool_where_the_served_order_is_fused_otherwise(engine, demo_items):
    category_log(engine, demo_items)
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[5]["id"]])
    # A layout that serves its order without BM25 over the history (weight 0 drops the source).
    recommender = engine.wire(replace(engine.layout, weights={"lexical_history": 0.0}), engine.encoder)[2]
    request = RecommendRequest(user_id="u1", k=10, diversity=0)

    def lexical_hits(result):
        return sum("lexical" in i.trace.sources for i in result.items)

    plain = recommender.recommend(request)
    assert plain.reranker is None and lexical_hits(plain) == 0
    assert lexical_hits(recommender.recommend(request, ReplayOptions(ranker_pool=True))) > 0
    recommender.reranker = engine.rerankers.load(save(engine.rerankers, accepted=True))
    reranked = recommender.recommend(request)
    assert reranked.reranker is not None and lexical_hits(reranked) > 0
    assert lexical_hits(recommender.recommend(replace(request, rerank=False))) == 0


def test_the_profile_weight_without_a_query_leaves_query_requests_and_the_ranker_pool_alone(engine, demo_items):
    category_log(engine, demo_items)
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[5]["id"]])
    # A layout whose profile does not vote where there is no query (weight 0 drops the source).
    recommender = engine.wire(replace(engine.layout, weights={"dense_profile_without_query": 0.0}),
                              engine.encoder)[2]
    request = RecommendRequest(user_id="u1", k=10, diversity=0)

    def profile_hits(result):
        return sum("dense_profile" in i.trace.sources for i in result.items)

    assert profile_hits(recommender.recommend(request)) == 0
    assert profile_hits(recommender.recommend(replace(request, query="stapler"))) > 0
    assert profile_hits(recommender.recommend(request, ReplayOptions(ranker_pool=True))) > 0
    assert profile_hits(engine.recommender.recommend(request)) > 0  # the served layout is untouched


def test_served_order_is_the_models_order_over_the_pipelines_features(engine, demo_items):
    category_log(engine, demo_items)
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[5]["id"], demo_items[40]["id"]])
    version = save(engine.rerankers, accepted=True)
    engine.reload_reranker()
    served = engine.recommender.recommend(RecommendRequest(user_id="u1", k=10, diversity=0))
    fused = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, diversity=0, rerank=False))
    inputs = rank_inputs(engine.catalogue, engine.index, engine.index.history("u1"), rank_candidates(fused.items))
    model = engine.rerankers.load(version).ranker
    # The model's scores, ordered around the items nobody has taken (order_by is checked by hand below).
    expected = order_by(inputs.ids, model.score(inputs.features), inputs.features[:, NO_OPINION_COLUMN] > 0)[:10]
    assert [i.id for i in served.items] == [r.id for r in expected]
    assert [i.score for i in served.items] == pytest.approx([r.score for r in expected])
    assert any(not r.kept for r in expected)


def test_diverse_reranked_list_is_mmr_over_the_rankers_order_with_retrievals_relevance(engine, demo_items):
    # MMR was tuned on fused scores: a reranked list enters it with the pool's fused scores, best
    # first, in the ranker's order (not the ranker's probabilities, not scores of ranks).
    category_log(engine, demo_items)
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[5]["id"], demo_items[40]["id"]])
    save(engine.rerankers, accepted=True)
    engine.reload_reranker()
    ranked = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, diversity=0))
    fused = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, diversity=0, rerank=False))
    # k=50 all three times: how deep the sources read depends on k.
    served = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, diversity=0.3))
    ids = [i.id for i in ranked.items]
    points = engine.catalogue.get_many(ids, with_vectors=True)
    vectors = {i: points[i].vector for i in ids}
    leaf = {i: points[i].payload["categories"][-1] for i in ids}
    relevance = sorted((i.score for i in fused.items), reverse=True)
    expected = diversify(ids, relevance, vectors, 0.3, 50, leaf)
    assert [i.id for i in served.items] == [p.id for p in expected]
    assert [i.trace.diversity.relevance_rank for i in served.items] == [p.relevance_rank for p in expected]
    assert any(p.relevance_rank != p.rank for p in expected)  # MMR did reorder the ranker's list
    probabilities = diversify(ids, [i.score for i in ranked.items], vectors, 0.3, 50, leaf)
    assert [p.id for p in probabilities] != [p.id for p in expected]  # the input matters here
    # Without a diversity in the request, a reranked list keeps the ranker's order (its own default,
    # chosen on validation) and says so; retrieval's lists keep theirs (MMR 0.3).
    default = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50))
    assert [i.id for i in default.items] == ids and all(i.trace.diversity is None for i in default.items)
    assert any("default for reranked lists" in n for n in default.notes)
    plain = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, rerank=False))
    assert all(i.trace.diversity is not None for i in plain.items) and any(n.startswith("diversity 0.3") for n in plain.notes)


def test_items_nobody_has_taken_keep_the_place_retrieval_gave_them(engine, demo_items):
    # u1's history shares items with u2 and u3, so collaborative has opinions about some candidates
    # and none about the rest of the catalogue (nobody took them).
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[1]["id"]])
    clicks(engine, "u2", [demo_items[1]["id"], demo_items[2]["id"], demo_items[3]["id"]])
    clicks(engine, "u3", [demo_items[0]["id"], demo_items[4]["id"]])
    save(engine.rerankers, accepted=True)
    engine.reload_reranker()
    fused = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, diversity=0, rerank=False))
    served = engine.recommender.recommend(RecommendRequest(user_id="u1", k=50, diversity=0))
    fused_place = {i.id: n for n, i in enumerate(fused.items, start=1)}
    cold = [i for i in served.items if "collaborative" in i.trace.no_opinion]
    known = [i for i in served.items if "collaborative" not in i.trace.no_opinion]
    assert cold and known
    for n, item in enumerate(served.items, start=1):
        if item in cold:
            assert item.trace.rerank.kept_place and n == fused_place[item.id] == item.trace.rerank.rank
    assert [i.score for i in served.items] == sorted((i.score for i in served.items), reverse=True)


def test_order_by_reorders_around_kept_items():
    order = order_by(["a", "b", "c", "d"], np.array([0.1, 0.9, 0.5, 0.3]), kept=np.array([0, 0, 1, 0]))
    assert [(r.id, r.place, r.kept) for r in order] == [("b", 1, False), ("d", 2, False), ("c", 3, True),
                                                       ("a", 4, False)]
    assert [r.score for r in order] == [0.9, 0.3, 0.3, 0.1]
    assert [r.id for r in order_by(["a", "b"], np.array([0.5, 0.5]))] == ["a", "b"]  # ties keep retrieval order


def test_unreadable_or_outdated_models_never_take_the_service_down(engine):
    good = save(engine.rerankers, accepted=True)
    assert engine.reload_reranker() == good
    outdated = engine.rerankers.save(lambda folder: folder.mkdir(parents=True),
                                     {"accepted": True, "blend": 1.0, "reason": "a cross-encoder-only model"})
    with pytest.raises(ValueError, match="predates"):
        engine.rerankers.load(outdated)
    assert engine.reload_reranker() == good  # logged, and the model that served keeps serving


def test_partial_saves_are_invisible(tmp_path):
    versions = RerankerVersions(tmp_path)
    (tmp_path / ".v20990101-000000.partial").mkdir()
    (tmp_path / ".v20990101-000000.partial" / "metadata.json").write_text(json.dumps({"accepted": True}))
    assert versions.all() == [] and versions.latest_accepted() is None
    version = save(versions, accepted=True)  # the next save clears what the crashed one left
    assert not list(tmp_path.glob(".*.partial")) and [m["version"] for m in versions.all()] == [version]


def test_a_version_whose_metadata_cannot_be_read_is_left_out_not_fatal(engine, caplog):
    good = save(engine.rerankers, accepted=True)
    damaged = engine.rerankers.path("v20990101-000000")
    damaged.mkdir()
    (damaged / "metadata.json").write_text('{"accepted": tr')  # a copy cut short
    assert [m["version"] for m in engine.rerankers.all()] == [good]
    assert "v20990101-000000 is unreadable" in caplog.text
    assert engine.reload_reranker() == good


def category_log(engine, demo_items, users=60):
    """Users who move through one category, four items each, in catalogue order."""
    by_cat = {}
    for item in demo_items:
        by_cat.setdefault(item["categories"][-1], []).append(item["id"])
    events = []
    cats = sorted(by_cat)
    for u in range(users):
        items = by_cat[cats[u % len(cats)]]
        start = (u // len(cats)) % max(1, len(items) - 4)
        events += [{"user_id": f"u{u}", "type": "click", "item_id": i} for i in items[start:start + 4]]
    engine.profiles.record(events)


def test_train_reranker_end_to_end_on_a_small_log(engine, demo_items):
    category_log(engine, demo_items)
    report = train_reranker(engine.recommender, engine.rerankers,
                            TrainingSettings(validation_users=0.2, candidates=20, cross_encoder="off", device=TEST_DEVICE))
    assert report.version is not None
    meta = {m["version"]: m for m in engine.rerankers.all()}[report.version]
    assert meta["accepted"] == report.accepted and meta["validation_users"] == 12
    # Nobody is held out: every user's earlier steps are lists, and the judged users' newest items
    # are never among them (``next_item_cases`` leaves each user's newest item out).
    assert meta["train_users"] == meta["log_users"] == 60
    assert meta["ranker"]["lists"] > 0 and meta["ranker"]["positives"] > 0 and not meta["ranker"]["cross_encoder"]
    assert meta["cross_encoder"] == {"trained": False, "why": "cross_encoder=off on cpu"} or TEST_DEVICE != "cpu"
    assert set(meta["validation"]) == {"retrieval", "ranker"}
    assert meta["base_model"].startswith("gradient-boosted trees") and meta["log_users"] == 60
    served = engine.reload_reranker()
    assert served == (report.version if report.accepted else None)
    # The saved model scores exactly as the trained one did: reload and compare on fresh lists.
    loaded = engine.rerankers.load(report.version, allow_rejected=True)
    x, _ = synthetic(n_lists=5)
    assert np.array_equal(loaded.ranker.score(x), RankingModel.load(engine.rerankers.path(report.version)).score(x))


def test_train_reranker_learns_from_the_pool_and_is_judged_against_the_served_order(engine, demo_items):
    category_log(engine, demo_items)
    recommender = engine.wire(replace(engine.layout, weights={"lexical_history": 0.0}), engine.encoder)[2]
    settings = TrainingSettings(validation_users=0.2, candidates=20, cross_encoder="off", device=TEST_DEVICE)
    report = train_reranker(recommender, engine.rerankers, settings)
    meta = {m["version"]: m for m in engine.rerankers.all()}[report.version]
    assert meta["pool_weights"] == engine.config.recommend.weights  # BM25 at its configured weight
    # The baseline is the order served without BM25, not the pool's own: a different number.
    same = train_reranker(engine.recommender, engine.rerankers, settings)
    other = {m["version"]: m for m in engine.rerankers.all()}[same.version]
    assert other["pool_weights"] == engine.config.recommend.weights
    assert meta["validation"]["retrieval"]["ndcg@10"] != other["validation"]["retrieval"]["ndcg@10"]
    assert meta["validation"]["ranker"]["ndcg@10"] == pytest.approx(other["validation"]["ranker"]["ndcg@10"])


def test_train_reranker_with_the_cross_encoder_as_a_feature(engine, demo_items):
    category_log(engine, demo_items, users=36)
    report = train_reranker(engine.recommender, engine.rerankers,
                            TrainingSettings(max_lists=40, max_groups=24, validation_users=0.2, candidates=10,
                                             cross_encoder="on", device=TEST_DEVICE))
    meta = {m["version"]: m for m in engine.rerankers.all()}[report.version]
    assert meta["cross_encoder"]["groups"] > 0 and meta["cross_encoder"]["pairs_per_epoch"] > 0
    assert set(meta["validation"]) == {"retrieval", "ranker", "ranker+cross_encoder"}
    kept = meta["ranker"]["cross_encoder"]
    assert kept == (meta["ranker"]["variant"] == "ranker+cross_encoder") == meta["cross_encoder"]["kept"]
    # It costs a pass per candidate: it serves only where clearly better than the ranker without it.
    against = meta["cross_encoder"]["compared"]["ranker+cross_encoder"]
    assert against["against"] == "ranker" and (not kept or against["competes"])
    loaded = engine.rerankers.load(report.version, device=TEST_DEVICE, allow_rejected=True)
    assert (loaded.cross_encoder is not None) == kept and loaded.ranker.uses_cross_encoder == kept
    # Measuring it: the ranker reading it is the one judged and saved, whatever that comparison says.
    measured = train_reranker(engine.recommender, engine.rerankers,
                              TrainingSettings(max_lists=40, max_groups=24, validation_users=0.2, candidates=10,
                                               cross_encoder="only", device=TEST_DEVICE))
    meta = {m["version"]: m for m in engine.rerankers.all()}[measured.version]
    assert meta["ranker"]["variant"] == "ranker+cross_encoder" and meta["cross_encoder"]["kept"]
    assert engine.rerankers.load(measured.version, device=TEST_DEVICE, allow_rejected=True).cross_encoder is not None
