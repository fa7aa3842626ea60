import math

from retrieval.state.cooccurrence import CoOccurrenceIndex


def test_neighbours_are_cosine_normalised_and_exclude_history():
    index = CoOccurrenceIndex()
    for user, items in {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["a", "c"], "u4": ["c"], "u5": ["c"]}.items():
        for item in items:
            index.add(user, item)
    scores = index.neighbours(["a"])
    assert set(scores) == {"b", "c"}
    assert math.isclose(scores["b"], 2 / math.sqrt(3 * 2))
    assert math.isclose(scores["c"], 1 / math.sqrt(3 * 3))
    assert index.knows("a") and not index.knows("zzz")


def test_recent_history_items_count_more():
    index = CoOccurrenceIndex()
    for user, items in {"u1": ["old", "x"], "u2": ["new", "y"]}.items():
        for item in items:
            index.add(user, item)
    scores = index.neighbours(["old", "new"], decay=0.5)
    assert scores["y"] > scores["x"]


def test_forget_user_and_popularity():
    index = CoOccurrenceIndex()
    index.add("u1", "a"); index.add("u2", "a"); index.add("u2", "b"); index.add("u2", "a")
    assert index.history("u2") == ["b", "a"]  # each item once, at its latest position
    assert index.popular(5) == [("a", 2), ("b", 1)]
    index.forget_user("u2")
    assert index.popular(5) == [("a", 1)]
    assert not index.knows("b")


def test_proximity_favours_items_that_came_right_after():
    index = CoOccurrenceIndex()
    for user, items in {"u1": ["a", "next", "x", "y", "far"], "u2": ["before", "a", "next", "z", "w"]}.items():
        for item in items:
            index.add(user, item)
    plain = index.neighbours(["a"])
    assert plain["next"] > plain["far"]  # "next" co-occurs twice
    assert math.isclose(plain["far"], plain["before"])
    seq = index.neighbours(["a"], proximity=1.0, backward=0.5)
    assert seq["next"] > seq["x"] > seq["far"]
    assert seq["before"] < plain["before"]  # one step before, halved
    assert seq["far"] < plain["far"]


def test_leave_out_ignores_one_users_own_sequence():
    index = CoOccurrenceIndex()
    for user, items in {"u1": ["a", "b"], "u2": ["a", "c"]}.items():
        for item in items:
            index.add(user, item)
    assert set(index.neighbours(["a"])) == {"b", "c"}
    # u1's logged future (b) must not vote for itself when u1's past is the query.
    assert set(index.neighbours(["a"], leave_out="u1")) == {"c"}
    assert index.neighbours(["a"], leave_out="u2") == {"b": 1.0}


def test_leaving_a_user_out_hides_what_only_they_took():
    index = CoOccurrenceIndex()
    index.add("u1", "a"); index.add("u1", "mine"); index.add("u2", "a")
    assert index.knows("mine") and not index.knows("mine", leave_out="u1")
    assert index.knows("a", leave_out="u1")
    assert index.user_counts(["a", "mine", "zzz"]) == {"a": 2, "mine": 1, "zzz": 0}
    assert index.user_counts(["a", "mine"], leave_out="u1") == {"a": 1, "mine": 0}


def _index(sequences: dict[str, list[str]], **bounds) -> CoOccurrenceIndex:
    from retrieval.state.cooccurrence import NeighbourBounds

    index = CoOccurrenceIndex(NeighbourBounds(**bounds))
    for user, items in sequences.items():
        for item in items:
            index.add(user, item)
    return index


def test_an_audience_scores_what_its_people_took_over_what_everyone_takes():
    """Takers of "a": u1 (a, p) and u2 (a, c); six users in all. An item scores the share of the
    audience that took it over ((its users + smoothing) / everyone) ** lift, groups summed."""
    index = _index({"u1": ["a", "p"], "u2": ["a", "c"], "u3": ["c"], "u4": ["c"], "u5": ["x"], "u6": ["x"]})
    scores = index.audience_scores([("k", 1.0, ["a"])], limit=10, lift=1.0, smoothing=0.0)
    assert set(scores) == {"a", "p", "c"}  # never "x": nobody in the audience took it
    assert math.isclose(scores["p"], 0.5 / (1 / 6))
    assert math.isclose(scores["c"], 0.5 / (3 / 6))  # as many takers here, but everyone takes it
    assert scores["p"] > scores["c"]
    # Without the lift it is the share alone; a second group adds at its weight.
    assert math.isclose(index.audience_scores([("k", 1.0, ["a"])], 10, lift=0.0)["c"], 0.5)
    both = index.audience_scores([("k", 1.0, ["a"]), ("j", 0.5, ["x"])], 10, lift=0.0)
    assert math.isclose(both["x"], 0.5) and math.isclose(both["c"], 0.5)


def test_an_audience_is_cached_until_its_items_gain_takers_or_its_people_may_have_moved():
    """20 takers of "a": the audience is read again once its items gain 2 new takers (10% of it),
    or as many events as it has people arrive from anyone, or its items change; until then the
    cached shares serve."""
    index = _index({f"u{n}": ["a", f"x{n}"] for n in range(20)})
    first = index.audience_scores([("k", 1.0, ["a"])], 100, lift=0.0)
    assert index.audience_share("k", "x0") == (0.05, 20)
    index.add("new0", "a"); index.add("new0", "only-new")  # one new taker: cached
    assert index.audience_scores([("k", 1.0, ["a"])], 100, lift=0.0) == first
    index.add("new1", "a")  # the second: read again
    again = index.audience_scores([("k", 1.0, ["a"])], 100, lift=0.0)
    assert again["only-new"] == 1 / 22 and index.audience_share("k", "x0") == (1 / 22, 22)
    for n in range(23):  # any events: after as many as the audience has people (22), read again
        index.add("u0", f"later{n}")
        scores = index.audience_scores([("k", 1.0, ["a"])], 100, lift=0.0)
        assert ("later0" in scores) == (n >= 21)
    assert "b" not in index.audience_scores([("k", 1.0, ["a"])], 100, lift=0.0)
    index.add("v", "b"); index.add("v", "y")
    assert "y" in index.audience_scores([("k", 1.0, ["a", "b"])], 100, lift=0.0)  # its items changed


def test_an_audience_is_dropped_when_one_of_its_people_is_forgotten():
    index = _index({"u1": ["a", "p"], "u2": ["a", "c"]})
    assert set(index.audience_scores([("k", 1.0, ["a"])], 10)) == {"a", "p", "c"}
    index.forget_user("nobody")  # not in the index: nothing to drop
    assert index.audience_share("k", "p") == (0.5, 2)
    index.forget_user("u1")
    assert index.audience_share("k", "p") is None
    assert "p" not in index.audience_scores([("k", 1.0, ["a"])], 10)
    assert index.audience_share("k", "p") == (0.0, 1) and index.audience_share("k", "never-taken") is None
    assert index.audience_scores([("none", 1.0, ["never-taken"])], 10) == {}


def test_the_least_recently_used_audience_goes_first():
    index = _index({"u1": ["a", "p"], "u2": ["b", "q"], "u3": ["c", "r"]}, max_audiences=2)
    for key, item in (("ka", "a"), ("kb", "b"), ("ka", "a"), ("kc", "c")):
        index.audience_scores([(key, 1.0, [item])], 10)
    assert index.audience_share("ka", "p") is not None and index.audience_share("kc", "r") is not None
    assert index.audience_share("kb", "q") is None


def test_an_audience_reads_a_bounded_number_of_people_from_every_item():
    """At the bound, each item of the group gives its most recent takers in turn, so an item with
    many takers cannot crowd out the others."""
    sequences = {f"big{n}": ["big", f"b{n}"] for n in range(10)}
    sequences["small0"] = ["small", "s0"]
    index = _index(sequences, audience_users=4)
    scores = index.audience_scores([("k", 1.0, ["big", "small"])], 100, lift=0.0)
    assert "s0" in scores
    assert {i for i in scores if i.startswith("b") and i != "big"} == {"b9", "b8", "b7"}  # the newest
