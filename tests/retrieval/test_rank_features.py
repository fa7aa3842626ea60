"""The learned ranker's features and model: hand-checked rows, learning, save/load, refusals."""

import json
import math

import numpy as np
import pytest

from retrieval.pipeline.fusion import FusedCandidate, SourceRank
from retrieval.ranking.drivers import DRIVER_GROUPS, rank_drivers
from retrieval.ranking.features import CROSS_ENCODER_COLUMN, FEATURE_NAMES, SEQUENCE_COLUMN, candidate_features
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import RankInputs, with_cross_encoder, with_cross_encoder_many
from retrieval.storage.vector_store import StoredPoint


def point(item_id, vector, category, brand=None, price=None):
    return StoredPoint(item_id, {"title": item_id, "categories": ["Office", category], "brand": brand, "price": price},
                       np.asarray(vector, dtype=np.float32))


def column(rows, name):
    return rows[:, FEATURE_NAMES.index(name)]


def test_features_are_read_off_the_trace_and_the_newest_items():
    newest = point("h2", [1, 0], "Pens", brand="Pilot", price=10.0)
    older = point("h1", [0, 1], "Paper")
    points = {"a": point("a", [0.6, 0.8], "Pens", brand="Pilot", price=20.0),
              "b": point("b", [0, 1], "Paper")}
    candidates = [
        FusedCandidate("a", 0.04, {"dense_profile": SourceRank(2, 0.5, 0.01), "collaborative": SourceRank(1, 3.0, 0.01)}),
        FusedCandidate("b", 0.02, {"dense_profile": SourceRank(1, 0.8, 0.01)}, no_opinion=["collaborative"]),
    ]
    rows = candidate_features(candidates, points, [newest, older], {"a": 7}, history_length=2)
    assert rows.shape == (2, len(FEATURE_NAMES))
    assert column(rows, "fused_position_log").tolist() == pytest.approx([0.0, math.log(2)])
    assert column(rows, "fused_score_relative").tolist() == pytest.approx([1.0, 0.5])
    assert column(rows, "dense_profile_inverse_rank").tolist() == pytest.approx([0.5, 1.0])
    assert column(rows, "dense_profile_score_relative").tolist() == pytest.approx([0.5 / 0.8, 1.0])
    assert column(rows, "collaborative_listed").tolist() == [1.0, 0.0]
    assert column(rows, "collaborative_no_opinion").tolist() == [0.0, 1.0]
    assert column(rows, "popularity_log").tolist() == pytest.approx([math.log(8), 0.0])
    assert column(rows, "similarity_newest").tolist() == pytest.approx([0.6, 0.0])
    assert column(rows, "similarity_recent_max").tolist() == pytest.approx([0.8, 1.0])
    assert column(rows, "same_category_newest").tolist() == [1.0, 0.0]
    assert column(rows, "category_share_recent").tolist() == pytest.approx([0.5, 0.5])
    assert column(rows, "same_brand_newest").tolist() == [1.0, 0.0]
    assert column(rows, "price_ratio_log_newest").tolist() == pytest.approx([math.log(2), 0.0])
    assert column(rows, "price_unknown").tolist() == [0.0, 1.0]
    assert np.isnan(rows[:, CROSS_ENCODER_COLUMN]).all()


def test_the_sequence_column_compares_the_history_vector_with_every_candidate():
    points = {"a": point("a", [0.6, 0.8], "Pens"), "b": point("b", [0, 1], "Paper"), "c": point("c", [1, 0], "Pens")}
    # "b" and "c" were not listed by the sequence source: the column is there for every candidate.
    candidates = [FusedCandidate("a", 0.04, {"sequence": SourceRank(1, 0.9, 0.01)}),
                  FusedCandidate("b", 0.02, {"dense_profile": SourceRank(1, 0.8, 0.01)}),
                  FusedCandidate("c", 0.01, {}, no_opinion=["collaborative"])]
    newest = [point("h", [1, 0], "Pens")]
    rows = candidate_features(candidates, points, newest, {}, 1, sequence_vector=np.array([0.0, 1.0], dtype=np.float32))
    assert rows[:, SEQUENCE_COLUMN].tolist() == pytest.approx([0.8, 1.0, 0.0])
    assert column(rows, "sequence_listed").tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(candidate_features(candidates, points, newest, {}, 1)[:, SEQUENCE_COLUMN]).all()


class FixedScores:
    """Stands in for a cross-encoder: one score per (context, document) pair, given in advance."""

    def __init__(self, scores):
        self.scores, self.seen = np.asarray(scores), None

    def score(self, queries, documents):
        self.seen = list(zip(queries, documents))
        return self.scores


def test_the_cross_encoder_fills_its_own_column_only():
    features = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32)
    features[:, CROSS_ENCODER_COLUMN] = np.nan
    inputs = RankInputs(["a", "b"], features, "Recently: Gel pen.", ["doc a", "doc b"])
    model = FixedScores([2.0, -1.0])
    with_ce = with_cross_encoder(inputs, model)
    assert with_ce[:, CROSS_ENCODER_COLUMN].tolist() == [2.0, -1.0]
    assert model.seen == [("Recently: Gel pen.", "doc a"), ("Recently: Gel pen.", "doc b")]
    assert np.isnan(inputs.features[:, CROSS_ENCODER_COLUMN]).all()  # the inputs are not changed
    assert with_cross_encoder(inputs, None) is inputs.features


def synthetic(n_lists=300, size=20, seed=0):
    """Lists where the item taken next is the one in the newest item's category (plus noise)."""
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for _ in range(n_lists):
        x = rng.normal(size=(size, len(FEATURE_NAMES))).astype(np.float32)
        x[:, FEATURE_NAMES.index("same_category_newest")] = 0
        taken = rng.integers(size)
        x[taken, FEATURE_NAMES.index("same_category_newest")] = 1
        x[:, CROSS_ENCODER_COLUMN] = np.nan
        y = np.zeros(size, dtype=np.int8)
        y[taken] = 1
        features.append(x)
        labels.append(y)
    return np.concatenate(features), np.concatenate(labels)


def test_ranker_learns_which_evidence_predicts_the_next_item_and_round_trips(tmp_path):
    x, y = synthetic()
    model = RankingModel.fit(x, y)
    test_x, test_y = synthetic(n_lists=50, seed=1)
    scores = model.score(test_x)
    assert scores[test_y == 1].min() > scores[test_y == 0].max()
    model.save(tmp_path / "m")
    loaded = RankingModel.load(tmp_path / "m")
    assert np.array_equal(loaded.score(test_x), scores)


def test_ranker_refuses_bad_training_data_and_other_features(tmp_path):
    x, y = synthetic(n_lists=20)
    with pytest.raises(ValueError, match="one class"):
        RankingModel.fit(x, np.zeros_like(y))
    with pytest.raises(ValueError, match="columns"):
        RankingModel.fit(x[:, :3], y)
    RankingModel.fit(x, y).save(tmp_path / "m")
    info = tmp_path / "m" / "ranker.json"
    info.write_text(info.read_text().replace("popularity_log", "popularity"))
    with pytest.raises(ValueError, match="no longer computes"):
        RankingModel.load(tmp_path / "m")


def test_a_ranker_trained_before_a_feature_was_added_reads_only_its_own_columns(tmp_path):
    """An upgrade that adds features (the sequence source's) keeps serving yesterday's ranker."""
    import pickle

    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = synthetic(n_lists=60)
    old_names = [n for n in FEATURE_NAMES if not n.startswith("sequence_") and n != "cross_encoder"]
    old_columns = [FEATURE_NAMES.index(n) for n in old_names]
    trees = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(x[:, old_columns], y)
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "ranker.pkl").write_bytes(pickle.dumps(trees))
    (folder / "ranker.json").write_text(json.dumps({"features": old_names + ["cross_encoder"],
                                                    "uses_cross_encoder": False}))
    loaded = RankingModel.load(folder)
    shifted = x.copy()
    shifted[:, [FEATURE_NAMES.index(n) for n in FEATURE_NAMES if n.startswith("sequence_")]] = 123.0
    assert np.array_equal(loaded.score(shifted), trees.predict_proba(x[:, old_columns])[:, 1])


def test_a_ranker_reads_the_sequence_column_only_if_trained_with_it(tmp_path):
    """Lists where the item taken next is the one the sequence encoder points at."""
    rng = np.random.default_rng(3)
    x, y = synthetic(n_lists=300)
    x[:, FEATURE_NAMES.index("same_category_newest")] = 0  # the only signal is the sequence column now
    x[:, SEQUENCE_COLUMN] = rng.normal(size=len(x)) - 2
    x[y == 1, SEQUENCE_COLUMN] += 4
    plain, reading = RankingModel.fit(x, y), RankingModel.fit(x, y, uses_sequence=True)
    assert "sequence_similarity" not in plain.read and "sequence_similarity" in reading.read
    shifted = x.copy()
    shifted[:, SEQUENCE_COLUMN] = np.nan  # what serving fills without a sequence encoder
    assert np.array_equal(plain.score(shifted), plain.score(x))
    scores = reading.score(x)
    assert scores[y == 1].mean() > scores[y == 0].mean() + 0.3
    reading.save(tmp_path / "m")
    loaded = RankingModel.load(tmp_path / "m")
    assert loaded.uses_sequence and np.array_equal(loaded.score(x), scores)
    with pytest.raises(ValueError, match="sequence encoder's similarity"):
        RankingModel.fit(shifted, y, uses_sequence=True)


def test_rank_drivers_name_the_evidence_that_raised_an_items_score():
    model = RankingModel.fit(*synthetic())
    x, y = synthetic(n_lists=1, size=20, seed=3)
    taken, other = int(np.flatnonzero(y)[0]), int(np.flatnonzero(y == 0)[0])
    drivers = rank_drivers(model, x, [taken, other], top=8)
    # The taken item stands out by its category (the rest of its list has 0 there): that raised it most.
    assert drivers[0][0]["evidence"] == "newest_items" and drivers[0][0]["effect"] > 0
    # Its effect is the score minus the score with the group at the list's medians, by hand.
    typical = x[taken].copy()
    for name in ("similarity_newest", "similarity_recent_max", "same_category_newest", "category_share_recent",
                 "same_brand_newest"):
        typical[FEATURE_NAMES.index(name)] = np.median(x[:, FEATURE_NAMES.index(name)])
    by_hand = model.score(x[[taken]])[0] - model.score(typical[None, :])[0]
    assert drivers[0][0]["effect"] == pytest.approx(by_hand, abs=1e-4)
    # Another item is typical in that respect: the category cannot be what drove it.
    assert all(d["evidence"] != "newest_items" or abs(d["effect"]) < 0.01 for d in drivers[1])
    # No cross-encoder in this model: it is never named; sizes are in decreasing order.
    assert all(d["evidence"] != "cross_encoder" for row in drivers for d in row)
    assert all([abs(d["effect"]) for d in row] == sorted((abs(d["effect"]) for d in row), reverse=True)
               for row in drivers)
    assert rank_drivers(model, x, []) == []


def test_every_ranker_column_but_history_length_belongs_to_one_driver_group():
    columns = [c for cols in DRIVER_GROUPS.values() for c in cols]
    assert len(columns) == len(set(columns)) and set(columns) == set(FEATURE_NAMES) - {"history_length_log"}


def test_many_lists_are_scored_in_one_call_and_each_gets_its_own_scores():
    def inputs(ids, context):
        features = np.zeros((len(ids), len(FEATURE_NAMES)), dtype=np.float32)
        features[:, CROSS_ENCODER_COLUMN] = np.nan
        return RankInputs(ids, features, context, [f"doc {i}" for i in ids])

    lists = [inputs(["a", "b"], "first"), inputs([], "empty"), inputs(["c", "d", "e"], "second")]
    model = FixedScores([1.0, 2.0, 3.0, 4.0, 5.0])
    first, empty, second = with_cross_encoder_many(lists, model)
    assert model.seen == [("first", "doc a"), ("first", "doc b"), ("second", "doc c"), ("second", "doc d"),
                          ("second", "doc e")]
    assert first[:, CROSS_ENCODER_COLUMN].tolist() == [1.0, 2.0]
    assert second[:, CROSS_ENCODER_COLUMN].tolist() == [3.0, 4.0, 5.0] and empty.shape == (0, len(FEATURE_NAMES))
