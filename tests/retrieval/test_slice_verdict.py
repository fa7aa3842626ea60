"""Learning must not cost a slice (issue 23): the trainers' accept rule judges every slice the
evaluation reports, and a ranker that concentrates exposure is blended with retrieval's order."""

import random

import numpy as np
import pytest

from retrieval.ranking.features import CROSS_ENCODER_COLUMN, FEATURE_NAMES, NO_OPINION_COLUMN
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import RankInputs
from retrieval.registry import RerankerVersions
from retrieval.training.protocol import (
    MIN_RELATIVE_GAIN,
    SLICE_WORSE_MARGIN,
    SLICES,
    STATED_PREFIX,
    held_out_items,
    judge_every_slice,
    slice_cases,
    slice_request,
    with_stated_preferences,
)
from retrieval.training.reranker import BLEND_WEIGHTS, Judge, RankList, blended, choose, collapsed, fewer_models


def test_clearly_better_on_all_users_but_clearly_worse_on_one_slice_is_refused_and_the_slice_named():
    rng = np.random.default_rng(0)
    old_all = rng.random(2000) * 0.2
    new = {"all": old_all + 0.02, "cold_items": np.full(200, 0.08) - rng.random(200) * 0.01,
           "cold_users": np.full(2000, 0.1), "long_tail": old_all[:500] + 0.02}
    old = {"all": old_all, "cold_items": np.full(200, 0.1) - rng.random(200) * 0.01,
           "cold_users": np.full(2000, 0.1), "long_tail": old_all[:500]}
    verdict = judge_every_slice(new, old)
    assert not verdict.accepted
    assert verdict.reason.startswith("clearly worse on cold_items: cold_items ")
    assert "on 200 cases" in verdict.reason and "cold_users" not in verdict.reason
    assert verdict.slices["all"]["better"] and verdict.slices["cold_items"]["worse"]
    assert not verdict.slices["cold_users"]["worse"] and not verdict.slices["long_tail"]["worse"]
    row = verdict.slices["cold_items"]
    assert row["cases"] == 200 and row["gain"] == pytest.approx(-0.02, abs=2e-3) and row["se"] > 0
    # The same model without the loss on cold items is accepted.
    assert judge_every_slice({**new, "cold_items": old["cold_items"]}, old).accepted


def test_level_on_the_small_slices_is_accepted_and_empty_slices_are_not_judged():
    rng = np.random.default_rng(1)
    old_all = rng.random(3000) * 0.2
    # Small slices: a small loss within their noise (their standard error is larger than it).
    small_old = rng.random(40) * 0.3
    small_new = small_old + np.tile([0.05, -0.05], 20) - 0.005  # -0.005, standard error about 0.008
    verdict = judge_every_slice({"all": old_all + 0.01, "cold_items": small_new, "cold_users_prefs": []},
                                {"all": old_all, "cold_items": small_old, "cold_users_prefs": []})
    assert verdict.accepted, verdict.reason
    assert verdict.slices["cold_items"]["gain"] < 0 and not verdict.slices["cold_items"]["worse"]
    assert verdict.slices["cold_users_prefs"] == {"cases": 0, "old": 0.0, "new": 0.0, "gain": 0.0, "se": 0.0,
                                                   "worse": False}
    assert "clearly worse on no slice (cold_items)" in verdict.reason
    # Not clearly better on all users: refused, whatever the slices say.
    level = judge_every_slice({"all": old_all}, {"all": old_all})
    assert not level.accepted and level.reason.startswith("not clearly better on all users")
    with pytest.raises(ValueError, match="'all'"):
        judge_every_slice({"cold_items": [1.0]}, {"cold_items": [0.0]})
    with pytest.raises(ValueError, match="cold_items"):
        judge_every_slice({"all": [1.0], "cold_items": [1.0]}, {"all": [0.0], "cold_items": []})


def test_a_slice_is_clearly_worse_only_beyond_two_standard_errors():
    # Losses of 1.5 and 3 standard errors on a slice (400 cases, paired error 0.05): only the second
    # refuses; one error would refuse a model with no effect on four slices half the time.
    old_all = np.random.default_rng(3).random(3000) * 0.2
    noise = np.tile([1.0, -1.0], 200)
    def verdict(loss: float):
        return judge_every_slice({"all": old_all + 0.02, "cold_users": 2.0 + noise - loss},
                                 {"all": old_all, "cold_users": np.full(400, 2.0)})
    within, beyond = verdict(0.75 * SLICE_WORSE_MARGIN * 0.05), verdict(1.5 * SLICE_WORSE_MARGIN * 0.05)
    assert within.slices["cold_users"]["se"] == pytest.approx(0.05, rel=0.01)
    assert within.accepted and not within.slices["cold_users"]["worse"]
    assert not beyond.accepted and beyond.reason.startswith("clearly worse on cold_users")


def test_a_gain_beyond_the_noise_but_below_the_minimum_effect_is_refused():
    # A near-identity change: every case gains a sliver, ten times its paired error, but
    # 0.5% of what serves is not worth a switch (MIN_RELATIVE_GAIN).
    old_all = np.random.default_rng(2).random(3000) * 0.2
    tiny = judge_every_slice({"all": old_all * 1.005}, {"all": old_all})
    assert tiny.slices["all"]["gain"] > 10 * tiny.slices["all"]["se"] > 0
    assert not tiny.accepted and "at least 1% of what serves" in tiny.reason
    assert judge_every_slice({"all": old_all * (1 + 2 * MIN_RELATIVE_GAIN)}, {"all": old_all}).accepted


def test_slice_cases_are_the_evaluations_slices_on_each_users_newest_item():
    sequences = {"u": ["a", "b", "c", "d"], "v": ["c", "e"], "w": ["x", "y", "a"]}
    categories = {"a": ["Office", "Pens"], "b": ["Office", "Pens"], "c": ["Office", "Tape"]}
    cold = held_out_items(sequences, 0.0, 0) | {"d", "y"}
    cases = slice_cases(sequences, ["u", "v", "w"], head={"a"}, categories=categories, cold=cold)
    assert set(cases) == set(SLICES)
    assert [(c.user, c.history, c.target) for c in cases["all"]] == [
        ("u", ("a", "b", "c"), "d"), ("v", ("c",), "e"), ("w", ("x", "y"), "a")]
    assert [(c.user, c.history) for c in cases["cold_users"]] == [("u", ("c",)), ("v", ("c",)), ("w", ("y",))]
    # Preferences from the leaf categories of the history (as the evaluation states them); w's
    # history has no categories, so w has no preference-only case.
    assert [(c.user, c.history, c.preferences) for c in cases["cold_users_prefs"]] == [
        ("u", (), "Interested in: Pens, Tape"), ("v", (), "Interested in: Tape")]
    assert [c.target for c in cases["long_tail"]] == ["d", "e"]
    assert all(any(c is a for a in cases["all"]) for c in cases["long_tail"])
    # Cold items: targets among them, with histories that never mention them.
    assert [(c.user, c.history, c.target) for c in cases["cold_items"]] == [("u", ("a", "b", "c"), "d")]
    assert slice_request(cases["cold_users_prefs"][0], 10).user_id == STATED_PREFIX + "u"
    assert slice_request(cases["all"][0], 10, history_items=2).history == ["b", "c"]
    assert len(held_out_items({"u": [str(i) for i in range(50)]}, 0.1, 3)) == 5


@pytest.mark.slow
def test_a_preference_only_case_is_answered_from_the_stated_text_and_nothing_is_written(engine, demo_items):
    engine.profiles.record([{"user_id": "u1", "type": "click", "item_id": demo_items[0]["id"]},
                            {"user_id": "u1", "type": "click", "item_id": demo_items[1]["id"]}])
    leaf = demo_items[0]["categories"][-1]
    cases = slice_cases({"u1": [demo_items[0]["id"], demo_items[1]["id"]]}, ["u1"], set(),
                        {i["id"]: i["categories"] for i in demo_items})["cold_users_prefs"]
    assert cases and leaf in cases[0].preferences
    view = with_stated_preferences(engine.recommender, cases)
    result = view.recommend(slice_request(cases[0], 5))
    assert result.items and result.profile == "stored"  # the stated text's profile, computed for the request
    assert engine.profiles.log.preferences(STATED_PREFIX + "u1") is None  # nothing written
    # The recommender it was made from does not know the stated user.
    assert not engine.recommender.recommend(slice_request(cases[0], 5)).items or \
        engine.recommender.recommend(slice_request(cases[0], 5)).profile == "none"


def _lists(n_lists: int, seed: int, catalogue: int = 1000, size: int = 50, hubs: int = 9) -> list[RankList]:
    """Lists on which a ranker collapses: ``hubs`` popular items are among every list's candidates
    and the item taken next is one of them in half of the lists; in the other half it is the one
    item among retrieval's top 20 in the newest item's category (what a ranker should learn)."""
    rng = random.Random(seed)
    hub_ids = [f"hub{h}" for h in range(hubs)]
    out = []
    for n in range(n_lists):
        ids = rng.sample([f"i{j}" for j in rng.sample(range(catalogue - hubs), size - hubs)] + hub_ids, size)
        signal = rng.choice([i for i in ids[:20] if i not in hub_ids])
        target = rng.choice(hub_ids) if hub_ids and n % 2 else signal
        x = np.zeros((size, len(FEATURE_NAMES)), dtype=np.float32)
        x[:, FEATURE_NAMES.index("fused_position_log")] = np.log(np.arange(1, size + 1))
        x[:, FEATURE_NAMES.index("popularity_log")] = [5.0 if i in hub_ids else rng.random() for i in ids]
        x[ids.index(signal), FEATURE_NAMES.index("same_category_newest")] = 1
        x[:, CROSS_ENCODER_COLUMN] = np.nan
        x[:, NO_OPINION_COLUMN] = 0
        out.append(RankList(f"u{n}", target, RankInputs(ids, x, "", [])))
    return out


@pytest.mark.slow
def test_a_collapsing_ranker_is_blended_with_retrievals_order_and_the_blend_serves(tmp_path):
    train = _lists(600, seed=0)
    features = np.concatenate([rl.inputs.features for rl in train])
    labels = np.concatenate([rl.labels() for rl in train])
    ranker = RankingModel.fit(features, labels, seed=0)
    val = _lists(400, seed=1)
    judge = Judge(val, {"all": val, "long_tail": [], "cold_users": [], "cold_items": []}, catalogue_size=1000)
    # The ranker alone is better on NDCG@10 and fills every list with the hubs: the collapse guard trips.
    validation, _, verdicts = judge({"ranker": ranker})
    assert validation["ranker"]["ndcg@10"] > validation["retrieval"]["ndcg@10"] and verdicts["ranker"].accepted
    assert collapsed(validation["ranker"], validation["retrieval"])
    choice = choose(judge, {"ranker": ranker}, features, labels)
    assert choice.exposure["tried"] and choice.exposure["why"] == "trips the collapse guard"
    assert set(choice.exposure["blends"]) == {f"ranker+retrieval@{w:g}" for w in BLEND_WEIGHTS}
    # A blend passes every rule and serves; it is clearly better than retrieval and does not collapse.
    assert choice.accepted and choice.exposure["chosen"] in choice.exposure["blends"], choice.reason
    row = choice.exposure["blends"][choice.exposure["chosen"]]
    assert row["accepted"] and not collapsed(row, validation["retrieval"])
    assert row["ndcg@10"] > validation["retrieval"]["ndcg@10"]
    assert choice.model is not ranker and "blended with retrieval's order" in choice.reason
    # A blend with no weight on retrieval orders as the ranker; with all of it, as retrieval.
    scores = ranker.score(val[0].inputs.features)
    assert np.allclose(blended(ranker, features, labels, 0.0).score(val[0].inputs.features), scores)
    alone = blended(ranker, features, labels, 1.0).score(val[0].inputs.features)
    assert np.all(np.diff(alone) < 0)  # the retrieval order, strictly
    # The served ranker saves and loads as any other and scores the same.
    versions = RerankerVersions(tmp_path)
    version = versions.save(choice.model.save, {"accepted": True, "reason": "test", "ranker": {"cross_encoder": False}})
    loaded = versions.load(version)
    assert np.allclose(loaded.ranker.score(val[0].inputs.features), choice.model.score(val[0].inputs.features))


@pytest.mark.slow
def test_a_ranker_that_keeps_exposure_is_not_blended():
    train = _lists(400, seed=2, hubs=0)
    features = np.concatenate([rl.inputs.features for rl in train])
    labels = np.concatenate([rl.labels() for rl in train])
    val = _lists(300, seed=3, hubs=0)
    judge = Judge(val, {"all": val, "long_tail": [], "cold_users": [], "cold_items": []}, catalogue_size=1000)
    choice = choose(judge, {"ranker": RankingModel.fit(features, labels, seed=0)}, features, labels)
    assert not choice.exposure["tried"] and choice.exposure["chosen"] is None


class FixedJudge:
    """Validation with NDCG@10 per list fixed in advance for each order (exposure the same for all)."""

    def __init__(self, per_case: dict[str, list[float]]):
        self.per_case = per_case

    def __call__(self, models):
        from retrieval.training.protocol import SliceVerdict

        names = ["retrieval", *models]
        rows = {n: {"ndcg@10": float(np.mean(self.per_case[n])), "recall@10": 0.0, "coverage@10": 0.5,
                    "gini@10": 0.5, "users": len(self.per_case[n])} for n in names}
        return rows, {n: self.per_case[n] for n in names}, {n: SliceVerdict(True, "no slice worse") for n in models}


def test_a_variant_that_reads_one_more_model_competes_only_where_clearly_better_than_without_it():
    rng = np.random.default_rng(0)
    retrieval = list(rng.random(400) * 0.5)
    ranker = [x + 0.1 for x in retrieval]
    # Better than the plain ranker on average, but within its noise: it must not be chosen.
    noisy = [x + rng.normal(0.005, 0.3) for x in ranker]
    clear = [x + 0.05 for x in ranker]
    models = {"ranker": None, "ranker+sequence": None}
    features, labels = np.zeros((2, len(FEATURE_NAMES))), np.array([0, 1])
    within = choose(FixedJudge({"retrieval": retrieval, "ranker": ranker, "ranker+sequence": noisy}), models,
                    features, labels, without={"ranker+sequence": ("ranker",)})
    assert np.mean(noisy) > np.mean(ranker)
    assert within.variant == "ranker" and not within.added_models["ranker+sequence"]["competes"]
    assert within.added_models["ranker+sequence"]["against"] == "ranker"
    beyond = choose(FixedJudge({"retrieval": retrieval, "ranker": ranker, "ranker+sequence": clear}), models,
                    features, labels, without={"ranker+sequence": ("ranker",)})
    assert beyond.variant == "ranker+sequence" and beyond.added_models["ranker+sequence"]["competes"]
    # Measuring it: only the variants that read it compete, whatever that comparison says.
    only = choose(FixedJudge({"retrieval": retrieval, "ranker": ranker, "ranker+sequence": noisy}), models,
                  features, labels, without={"ranker+sequence": ("ranker",)}, only=("sequence",))
    assert only.variant == "ranker+sequence"
    # Without the comparison (no ``without``), the best by validation NDCG@10 is chosen, as before.
    assert choose(FixedJudge({"retrieval": retrieval, "ranker": ranker, "ranker+sequence": noisy}), models,
                  features, labels).variant == "ranker+sequence"


def test_a_variant_reading_two_added_models_must_be_clearly_better_than_each_variant_with_one_fewer():
    rng = np.random.default_rng(1)
    retrieval = list(rng.random(400) * 0.5)
    ranker = [x + 0.1 for x in retrieval]
    cross_encoder = [x + rng.normal(0.005, 0.3) for x in ranker]  # within noise of the ranker
    sequence = [x + 0.05 for x in ranker]  # clearly better than the ranker
    both = [x + rng.normal(0.001, 0.3) for x in sequence]  # the sequence's gain, the cross-encoder's noise
    per_case = {"retrieval": retrieval, "ranker": ranker, "ranker+cross_encoder": cross_encoder,
                "ranker+sequence": sequence, "ranker+cross_encoder+sequence": both}
    models = {name: None for name in per_case if name != "retrieval"}
    features, labels = np.zeros((2, len(FEATURE_NAMES))), np.array([0, 1])
    without = fewer_models(models)
    assert without["ranker+cross_encoder+sequence"] == ("ranker+cross_encoder", "ranker+sequence", "ranker")

    chosen = choose(FixedJudge(per_case), models, features, labels, without)
    # Clearly better than the cross-encoder alone, not than the sequence encoder alone: it does not serve.
    both_row = chosen.added_models["ranker+cross_encoder+sequence"]
    assert not both_row["eligible"] and not both_row["competes"] and both_row["against"] == "ranker+sequence"
    assert both_row["comparisons"]["ranker+cross_encoder"]["competes"]
    assert chosen.variant == "ranker+sequence"

    # Two added models that each cost the ranker: the pair must still beat the ranker alone.
    worse = {**per_case, "ranker+cross_encoder": [x - 0.05 for x in ranker],
             "ranker+sequence": [x - 0.05 for x in ranker], "ranker+cross_encoder+sequence": [x + 0.001 for x in ranker]}
    paired = choose(FixedJudge(worse), models, features, labels, without)
    assert paired.variant == "ranker" and not paired.added_models["ranker+cross_encoder+sequence"]["eligible"]

    # Measuring the cross-encoder: only variants reading it compete, and its own comparisons are waived,
    # but the sequence encoder it is paired with must still earn its place.
    noisy_both = [x + rng.normal(0.005, 0.3) for x in cross_encoder]
    measured = choose(FixedJudge({**per_case, "ranker+cross_encoder+sequence": noisy_both}), models, features,
                      labels, without, only=("cross_encoder",))
    assert measured.variant == "ranker+cross_encoder" and measured.added_models["ranker+cross_encoder"]["eligible"]
    comparisons = measured.added_models["ranker+cross_encoder+sequence"]["comparisons"]
    assert comparisons["ranker+sequence"]["measured"] and not comparisons["ranker+cross_encoder"]["measured"]
    assert not comparisons["ranker"]["measured"]  # it drops the sequence encoder too
