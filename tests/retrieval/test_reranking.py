"""Reranker versions and the rerank stage: only accepted models serve, and responses say which."""

import json

import pytest

from encoders.cross_encoder import CrossEncoderReranker
from retrieval.recommender import RecommendRequest
from retrieval.reranker_training import RerankerVersions, TrainingSettings, train_reranker
from tests.conftest import TEST_DEVICE

pytestmark = pytest.mark.slow


def save(versions, accepted, blend=1.0):
    return versions.save(CrossEncoderReranker(device=TEST_DEVICE, max_length=64).save,
                         {"accepted": accepted, "blend": blend, "reason": "test"})


def test_rejected_model_is_never_served_and_accepted_one_is_reported(engine):
    assert engine.reload_reranker() is None
    rejected = save(engine.rerankers, accepted=False)
    assert engine.reload_reranker() is None
    with pytest.raises(ValueError, match="never served"):
        engine.rerankers.load(rejected)
    plain = engine.recommender.recommend(RecommendRequest(query="quiet keyboard", k=5))
    assert plain.reranker is None and any("no reranker" in n for n in plain.notes)

    accepted = save(engine.rerankers, accepted=True, blend=2.0)
    assert engine.reload_reranker() == accepted
    result = engine.recommender.recommend(RecommendRequest(query="quiet keyboard", k=5))
    assert result.reranker == accepted and len(result.items) == 5
    assert all("rerank" in i.trace and i.trace["rerank"]["rank"] >= 1 for i in result.items)
    off = engine.recommender.recommend(RecommendRequest(query="quiet keyboard", k=5, rerank=False))
    assert off.reranker is None and [i.id for i in off.items] == [i.id for i in plain.items]
    # A newer rejected model does not displace the accepted one.
    save(engine.rerankers, accepted=False)
    assert engine.reload_reranker() == accepted


def test_partial_saves_are_invisible(tmp_path):
    versions = RerankerVersions(tmp_path)
    (tmp_path / ".v20990101-000000.partial").mkdir()
    (tmp_path / ".v20990101-000000.partial" / "metadata.json").write_text(json.dumps({"accepted": True}))
    assert versions.all() == [] and versions.latest_accepted() is None


def test_train_reranker_end_to_end_on_a_small_log(engine, demo_items):
    # Users who move through one category; each user sees 4 items of it.
    by_cat = {}
    for item in demo_items:
        by_cat.setdefault(item["categories"][-1], []).append(item["id"])
    events = []
    for u in range(36):
        cat = sorted(by_cat)[u % len(by_cat)]
        items = by_cat[cat][(u // len(by_cat)) * 4:(u // len(by_cat)) * 4 + 4]
        events += [{"user_id": f"u{u}", "type": "click", "item_id": i} for i in items]
    engine.profiles.record(events)
    report = train_reranker(engine.recommender, engine.rerankers,
                            TrainingSettings(max_groups=40, validation_users=0.2, candidates=20, device=TEST_DEVICE))
    assert report.version is not None
    meta = {m["version"]: m for m in engine.rerankers.all()}[report.version]
    assert meta["accepted"] == report.accepted and meta["groups"] > 0 and meta["validation_users"] == 7
    assert "retrieval" in meta["validation"] and meta["base_model"]
    served = engine.reload_reranker()
    assert served == (report.version if report.accepted else None)
