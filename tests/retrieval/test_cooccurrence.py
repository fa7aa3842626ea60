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
