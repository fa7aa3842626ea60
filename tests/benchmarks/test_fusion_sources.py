"""benchmarks/fusion_sources.py: the fusion against each of its sources, paired, with a verdict per slice."""

from benchmarks.fusion_sources import FUSION, SOURCES, compare


def _result(ranks: dict[str, list]) -> dict:
    """An evaluation result with one slice whose per-user target ranks are ``ranks`` per method."""
    return {"slices": {"all": {m: {"users": len(r), "ndcg@10": 0.0} for m, r in ranks.items()}},
            "ranks": {"all": ranks}}


def test_a_source_that_beats_the_fusion_beyond_the_noise_is_named_and_a_tie_is_level():
    users = 200
    fused = [1 if n % 4 == 0 else None for n in range(users)]  # a quarter of the targets at the top
    ranks = {FUSION: fused, **{method: fused for method in SOURCES.values()}}
    ranks[SOURCES["lexical"]] = [1 if n % 2 == 0 else None for n in range(users)]  # twice as many
    ranks[SOURCES["popular"]] = [None] * users
    out = compare(_result(ranks), margin=1.0)["all"]["sources"]
    assert out["lexical"]["verdict"] == "source ahead" and out["lexical"]["fusion_minus_source"]["ndcg@10"] < 0
    assert out["popular"]["verdict"] == "fusion ahead"
    assert out["dense_profile"]["verdict"] == "level" and out["dense_profile"]["fusion_minus_source"]["ndcg@10"] == 0
