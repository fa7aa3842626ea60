"""Reindex: new collections, one atomic switch; a failure midway leaves the old index serving."""

import json

import numpy as np
import pytest

from encoders import BiEncoder, item_text
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.reindex import reindex
from retrieval.storage.layout import LAYOUT_FILE, read_layout
from tests.conftest import TEST_DEVICE

pytestmark = pytest.mark.slow


def top(engine, **kw):
    return [i.id for i in engine.recommender.recommend(RecommendRequest(k=10, **kw)).items]


def test_reindex_switches_atomically_and_survives_restart(engine, make_engine, encoder, tmp_path):
    engine.profiles.record([{"user_id": "u", "type": "click", "item_id": "demo-000005"}])
    before = top(engine, query="noise cancelling headphones")
    report = reindex(engine, encoder, encoder_path=None, batch_size=100)
    assert report.items == 360 and report.users == 1
    assert engine.layout.items.startswith("items__") and engine.catalogue.collection == engine.layout.items
    assert read_layout(engine.config.data_dir) == engine.layout
    assert top(engine, query="noise cancelling headphones") == before  # same encoder, same answers
    assert engine.recommender.recommend(RecommendRequest(user_id="u")).profile == "stored"
    # The next reindex drops the first layout's collections, in the vector index and the record
    # alike, and what a killed encoder training left in the index.
    from retrieval.state.catalogue import items_spec

    engine.store.ensure_collection(items_spec(encoder.dim, "validate__items_20261201000000_7"))
    second = reindex(engine, encoder, encoder_path=None, batch_size=100)
    assert {"items", "users", "validate__items_20261201000000_7"} <= set(second.dropped)
    assert not {"items", "users"} & set(engine.store.collections())
    assert set(engine.log.item_collections()) == {report.layout.items, second.layout.items}
    engine.close()
    again = make_engine(tmp_path / "data")
    assert again.layout == second.layout and again.catalogue.count() == 360


def test_a_user_forgotten_after_a_reindex_leaves_the_replaced_layouts_profiles_too(engine, encoder):
    engine.profiles.record([{"user_id": "u", "type": "click", "item_id": "demo-000005"}])
    engine.profiles.refresh_stale()
    point = engine.profiles.point_id("u")
    old = engine.layout.users
    reindex(engine, encoder, encoder_path=None, batch_size=100)
    assert engine.store.retrieve(old, [point]) and engine.store.retrieve(engine.layout.users, [point])
    assert engine.forget_user("u").forgotten
    assert not engine.store.retrieve(old, [point]) and not engine.store.retrieve(engine.layout.users, [point])


def test_reindex_serves_a_trained_encoder_with_the_fusion_weights_chosen_for_it(engine, make_engine, encoder,
                                                                                 tmp_path):
    version = tmp_path / "models" / "encoder" / "v1"
    encoder.save(version)
    (version / "metadata.json").write_text(json.dumps({"accepted": True,
                                                       "fusion_weights": {"lexical_history": 0.25}}))
    history = RecommendRequest(k=10, history=["demo-000005", "demo-000006"])
    query = RecommendRequest(k=10, query="noise cancelling headphones")

    def lexical(req, options=None):
        items = engine.recommender.recommend(req, options).items
        return {i.id: i.trace.sources["lexical"].contribution for i in items if "lexical" in i.trace.sources}

    before_history, before_query = lexical(history), lexical(query)
    report = reindex(engine, BiEncoder(str(version), device=TEST_DEVICE), str(version), batch_size=200)
    assert report.layout.weights == {"lexical_history": 0.25} and read_layout(engine.config.data_dir) == report.layout
    assert engine.recommender.config.weights["lexical_history"] == 0.25
    assert engine.recommender.config.weights["lexical"] == 1.0  # the others stay as configured
    # Same vectors; BM25 over the history's titles at a quarter of its weight, a search query's words
    # as before (the weight was chosen on history requests only).
    after_history = lexical(history)
    shared = set(before_history) & set(after_history)
    assert shared and all(after_history[i] == pytest.approx(before_history[i] / 4) for i in shared)
    assert lexical(query) == pytest.approx(before_query)
    # The pool a ranker reorders keeps BM25 at its configured weight (a ranker picks from it).
    assert engine.recommender.config.ranker_pool_weights == {**engine.config.recommend.weights}
    assert lexical(RecommendRequest(k=10, history=history.history), ReplayOptions(ranker_pool=True)) \
        == pytest.approx(before_history)
    engine.close()
    again = make_engine(tmp_path / "data")
    assert again.recommender.config.weights["lexical_history"] == 0.25  # kept across restarts
    again.close()


def test_failure_midway_leaves_the_old_index_serving(engine, encoder):
    before_layout = engine.layout
    before = top(engine, query="standing desk")
    collections = set(engine.store.collections())

    def die(batch):
        if batch == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        reindex(engine, encoder, encoder_path=None, batch_size=100, after_batch=die)
    assert engine.layout == before_layout
    assert not (engine.config.data_dir / LAYOUT_FILE).exists()
    assert set(engine.store.collections()) == collections  # partial collections dropped
    assert top(engine, query="standing desk") == before


def test_a_data_directory_is_opened_by_one_process_at_a_time(engine, make_engine, tmp_path):
    with pytest.raises(RuntimeError, match="in use by pid"):
        make_engine(tmp_path / "data")
    engine.close()
    make_engine(tmp_path / "data").close()


def test_layout_file_is_plain_json(tmp_path):
    from retrieval.storage.layout import Layout, write_layout
    write_layout(tmp_path, Layout("items__1", "users__1", "/models/enc"))
    assert json.loads((tmp_path / LAYOUT_FILE).read_text()) == {"items": "items__1", "users": "users__1",
                                                                  "encoder": "/models/enc", "weights": None}


def record_category_runs(engine, demo_items):
    """30 users, each clicking four items of one category in a row."""
    by_cat = {}
    for item in demo_items:
        by_cat.setdefault(item["categories"][-1], []).append(item["id"])
    events = []
    for u in range(30):
        cat = sorted(by_cat)[u % len(by_cat)]
        start = (u // len(by_cat)) * 4
        events += [{"user_id": f"u{u}", "type": "click", "item_id": i} for i in by_cat[cat][start:start + 4]]
    engine.profiles.record(events)


def test_train_encoder_saves_a_versioned_model_with_its_verdict(engine, demo_items, tmp_path):
    from retrieval.registry import latest_accepted_encoder, trained_fusion_weights
    from retrieval.training.encoder import train_encoder
    from retrieval.training.settings import EncoderTrainingSettings

    record_category_runs(engine, demo_items)
    models = tmp_path / "models"
    models.mkdir()
    head = engine.log.head()
    meta = train_encoder(engine, models, EncoderTrainingSettings(max_pairs=60, batch_size=8, device=TEST_DEVICE))
    v = meta["validation"]
    own = v["encoder_gain_at_chosen_weights"]  # clearly better than the old encoder at those weights too
    tail = v["long_tail"]  # and not clearly worse on the long-tail targets
    assert meta["accepted"] == (v["gain"] > 0 and v["gain"] > v["standard_error"]
                                and own > 0 and own > v["encoder_gain_standard_error"]
                                and not (tail["encoder_gain_at_chosen_weights"] < 0
                                         and -tail["encoder_gain_at_chosen_weights"] > tail["standard_error"])
                                and v["slices_accepted"])
    # Every slice the evaluation reports is judged, against what serves (``judge_every_slice``).
    assert set(v["slices"]) == {"all", "cold_items", "cold_users", "cold_users_prefs", "long_tail"}
    assert v["slices"]["all"]["cases"] == v["users"] and v["slices"]["long_tail"]["cases"] == tail["users"]
    assert v["slices_accepted"] == (v["slices"]["all"]["better"]
                                    and not any(r["worse"] for r in v["slices"].values()))
    assert 0 < tail["users"] <= v["users"]
    assert v["gain"] == pytest.approx(v["fine_tuned_ndcg@10"] - v["current_encoder_ndcg@10"])
    # BM25's and the profile's weights are chosen with the new encoder: the best pair of those
    # tried, recorded for reindex.
    by_weight = v["by_fusion_weights"]
    key = ("lexical_history", "dense_profile_without_query")
    tried = [(b[key[0]], b[key[1]]) for b in by_weight]
    assert tried[0] == (1.0, 0.5)  # as served first
    assert sorted(tried) == [(0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0)]
    chosen = meta["fusion_weights"]
    assert set(chosen) == set(key)
    row = next(b for b in by_weight if (b[key[0]], b[key[1]]) == (chosen[key[0]], chosen[key[1]]))
    assert v["fine_tuned_ndcg@10"] == row["fine_tuned_ndcg@10"] == max(b["fine_tuned_ndcg@10"] for b in by_weight)
    assert v["current_encoder_ndcg@10"] == by_weight[0]["current_encoder_ndcg@10"]  # as served
    assert trained_fusion_weights(models / meta["version"]) == chosen
    assert trained_fusion_weights(tmp_path) is None  # not a trained version
    assert meta["pairs"] > 0 and v["users"] == 30  # every user's newest item is judged
    saved = json.loads((models / meta["version"] / "metadata.json").read_text())
    assert saved["accepted"] == meta["accepted"]
    # The model carries its catalogue's mean vector, and the saved model encodes with it taken out:
    # the catalogue re-encoded by it is centred on zero.
    assert (models / meta["version"] / "center.npy").exists() and meta["centre"]["norm"] > 0
    assert 0 < meta["centre"]["mean_cosine_random_pairs"] < 1
    assert set(v["dense"]) == {"current_encoder_ndcg@10", "fine_tuned_ndcg@10", "fine_tuned_without_centring_ndcg@10"}
    # The verdict is on the fused retrieval: the scratch collections it was measured in are gone,
    # and the served catalogue is the one it was.
    assert not [c for c in engine.store.collections() if c.startswith("validate__")]
    assert engine.catalogue.count() == len(demo_items)
    # Nor were they ever written to the system of record, which every instance follows.
    assert engine.log.head() == head and not engine.log.changes_after(head).items
    tuned = BiEncoder(str(models / meta["version"]), device=TEST_DEVICE)
    texts = [item_text(i) for i in demo_items]
    assert np.linalg.norm(tuned.encode(texts).mean(axis=0)) < 0.5 * meta["centre"]["norm"]
    assert latest_accepted_encoder(models) == ((models / meta["version"]) if meta["accepted"] else None)


def test_scratch_items_an_earlier_version_left_in_the_record_are_dropped_once_at_open(engine, make_engine,
                                                                                      demo_points, tmp_path):
    from retrieval.engine import SCRATCH_ROWS

    engine.log.put_items("validate__items_20261201000000_7", demo_points[:5])  # as earlier versions wrote
    engine.log.set_meta(SCRATCH_ROWS[0], "")
    engine.close()
    reopened = make_engine(data_dir=tmp_path / "data")
    assert reopened.log.item_collections() == ["items"] and reopened.catalogue.count() == len(demo_points)
    assert reopened.log.get_meta(SCRATCH_ROWS[0]) == SCRATCH_ROWS[1]


def test_the_encoder_trainer_leaves_each_users_newest_items_out_by_the_validation_gap(engine, demo_items, tmp_path):
    from retrieval.training.encoder import train_encoder
    from retrieval.training.protocol import COLD_ITEM_SHARE, held_out_items, log_sequences
    from retrieval.training.settings import EncoderTrainingSettings

    record_category_runs(engine, demo_items)
    # The items the cold-items slice judges are left out of the pairs as well (``COLD_ITEM_SHARE``).
    sequences = log_sequences(engine.log, engine.index)
    cold = held_out_items(sequences, COLD_ITEM_SHARE, 0)

    def steps(gap):
        kept = [[i for i in seq[:len(seq) - gap] if i not in cold] for seq in sequences.values()]
        return sum(len(seq) - 1 for seq in kept if len(seq) > 1)

    assert 0 < steps(1) < 30 * 2
    one = train_encoder(engine, tmp_path / "one", EncoderTrainingSettings(validation_gap=1, batch_size=8,
                                                                          device=TEST_DEVICE))
    assert one["pairs"] == steps(1)  # the steps to the second and third items, without cold items
    assert one["validation"]["cold_items_held_out"] == len(cold)
    full = train_encoder(engine, tmp_path / "full", EncoderTrainingSettings(validation_gap=2, max_pairs=60,
                                                                            batch_size=8, device=TEST_DEVICE))
    assert full["pairs"] == steps(2)  # the step to the second item only
    # Users too short for the gap: a clear error, and nothing is saved.
    with pytest.raises(ValueError, match="validation_gap 3 a user needs 5 or more items"):
        train_encoder(engine, tmp_path / "short", EncoderTrainingSettings(validation_gap=3, device=TEST_DEVICE))
    assert not (tmp_path / "short").exists() or not any((tmp_path / "short").iterdir())
    # The newest item is the validation target: a model that learned from it could not be judged.
    with pytest.raises(ValueError, match="validation_gap must be 1 or more"):
        train_encoder(engine, tmp_path / "zero", EncoderTrainingSettings(validation_gap=0, device=TEST_DEVICE))


def test_encoder_validation_scores_the_fused_retrieval_with_the_vectors_given(engine, demo_items):
    from retrieval.training.encoder import _fused_ndcg, catalogue_vectors

    by_cat = {}
    for item in demo_items:
        by_cat.setdefault(item["categories"][-1], []).append(item["id"])
    # Three items of a category, then a fourth of it: text alone finds it.
    cases = [(f"u{n}", items[:3], items[3]) for n, items in enumerate(by_cat.values()) if len(items) >= 4]
    served, = _fused_ndcg(engine, cases)
    assert sum(served) > 0
    same = catalogue_vectors(engine, None)
    # The served vectors written to scratch collections score exactly as the served catalogue does.
    assert _fused_ndcg(engine, cases, engine.encoder, same) == [served]
    # Other vectors give another ranking: each item takes a random other item's vector.
    rng = np.random.default_rng(0)
    shuffled = dict(zip(same, rng.permutation(np.stack(list(same.values())))))
    assert _fused_ndcg(engine, cases, engine.encoder, shuffled) != [served]
    # Weightings are scored in one pass over the same collections; "as served" is the default.
    as_served, no_words = _fused_ndcg(engine, cases, engine.encoder, same, [None, {"lexical_history": 0.0}])
    assert as_served == served and no_words != served
    assert not [c for c in engine.store.collections() if c.startswith("validate__")]


def test_encoder_validation_knows_only_the_log_before_each_users_newest_item(engine, demo_items):
    """Every user took ``a`` and then ``b`` last. Judged with the log's own index, the others' newest
    items vote for ``b``: a future no model trained before those items could know. Judged as the
    evaluation replays the log, nobody has taken ``b`` yet."""
    from retrieval.training.encoder import _fused_ndcg, replayed_before_newest

    a, b = demo_items[0]["id"], demo_items[-1]["id"]
    engine.profiles.record([{"user_id": f"u{n}", "type": "purchase", "item_id": i}
                            for n in range(8) for i in (a, b)])
    cases = [(f"u{n}", [a], b) for n in range(8)]
    # The collaborative source alone, so that only what it knows decides.
    collaborative_only = [{"dense_profile": 0.0, "lexical_history": 0.0}]
    with_future, = _fused_ndcg(engine, cases, weightings=collaborative_only)
    replayed, = _fused_ndcg(engine, cases, weightings=collaborative_only,
                            index=replayed_before_newest({f"u{n}": [a, b] for n in range(8)}))
    assert with_future == [1.0] * 8
    assert replayed == [0.0] * 8


def test_reindex_keeps_items_accepted_under_earlier_rules(engine, encoder):
    from retrieval.storage.records import Item

    old = Item(id="old/style id", title="Stapler with many notes", attributes={f"note{n}": n for n in range(70)})
    engine.catalogue.write(engine.catalogue.encode([old]))  # as an earlier version accepted it, past today's caps
    report = reindex(engine, encoder, encoder_path=None, batch_size=100)
    assert report.items == 361
    kept = engine.catalogue.get("old/style id")
    assert kept is not None and len(kept.payload["attributes"]) == 70
