from retrieval.pipeline.fusion import SourceResult, fuse


def test_plain_rrf_punishes_cold_items_but_opinion_aware_fusion_does_not():
    text = SourceResult("dense", [("cold", 0.9), ("warm_a", 0.8), ("warm_b", 0.7)])
    collab = SourceResult("collaborative", [("warm_b", 5.0), ("warm_a", 4.0)], knows=lambda i: i != "cold")
    plain = [c.id for c in fuse([text, collab], no_opinion_credit=0.0)]
    fair = [c.id for c in fuse([text, collab], no_opinion_credit=1.0)]
    assert plain[-1] == "cold"  # plain RRF drags the never-seen item to the bottom
    assert fair[0] == "cold"  # ranked by what the text source says about it


def test_known_item_missing_from_a_list_counts_as_a_low_opinion():
    text = SourceResult("dense", [("x", 0.9), ("y", 0.8)])
    collab = SourceResult("collaborative", [("y", 1.0)], knows=lambda i: True)
    assert [c.id for c in fuse([text, collab])] == ["y", "x"]


def test_trace_keeps_every_source_rank_and_the_no_opinion_list():
    text = SourceResult("dense", [("a", 0.9), ("b", 0.5)])
    lexical = SourceResult("lexical", [("b", 3.0)], weight=0.5)
    collab = SourceResult("collaborative", [("a", 2.0)], knows=lambda i: i == "a")
    fused = {c.id: c for c in fuse([text, lexical, collab])}
    assert fused["a"].sources["dense"].rank == 1 and fused["a"].sources["collaborative"].rank == 1
    assert "lexical" not in fused["a"].sources
    assert fused["b"].sources["lexical"].score == 3.0
    assert fused["b"].no_opinion == ["collaborative"] and fused["a"].no_opinion == []


def test_weights_and_determinism():
    a = SourceResult("a", [("x", 1.0), ("y", 0.5)], weight=3.0)
    b = SourceResult("b", [("y", 1.0), ("x", 0.5)], weight=1.0)
    assert [c.id for c in fuse([a, b])] == ["x", "y"]
    tie = fuse([SourceResult("a", [("q", 1.0)]), SourceResult("b", [("p", 1.0)])])
    assert [c.id for c in tie] == ["p", "q"]
    assert fuse([]) == [] and fuse([SourceResult("a", [])]) == []
