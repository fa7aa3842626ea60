"""The bounded, cached neighbour lists against the exact computation, their freshness, and the
start-up snapshot."""

import math
import random

import numpy as np
import pytest

from retrieval.state.cooccurrence import CoOccurrenceIndex, IndexSnapshot, NeighbourBounds

SETTINGS = [(1.0, 0.5), (0.0, 1.0), (0.5, 1.0)]


def random_log(seed: int, users: int = 40, items: int = 60, longest: int = 30) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    events = []
    for u in range(users):
        for _ in range(rng.randint(1, longest)):
            events.append((f"u{u}", f"i{int(rng.paretovariate(1.2)) % items}"))
    rng.shuffle(events)  # interleaved users, as a log is; re-takes move an item to the end
    return events


def build(events, bounds: NeighbourBounds | None = None) -> CoOccurrenceIndex:
    index = CoOccurrenceIndex(bounds)
    for user, item in events:
        index.add(user, item)
    return index


def assert_same_scores(bounded: dict[str, float], exact: dict[str, float]) -> None:
    assert set(bounded) == set(exact)
    assert all(math.isclose(bounded[i], exact[i], rel_tol=1e-9) for i in exact)
    # Same order, except where two scores differ only by rounding.
    b, e = list(bounded), list(exact)
    assert all(b[n] == e[n] or math.isclose(exact[b[n]], exact[e[n]], rel_tol=1e-9) for n in range(len(e)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounded_lists_equal_the_exact_scores_when_no_bound_is_reached(seed):
    index = build(random_log(seed), NeighbourBounds(stale_fraction=0.0))
    for user in [f"u{u}" for u in range(40)]:
        history = index.history(user)
        for proximity, backward in SETTINGS:
            for decay in (0.8, 1.0):
                assert_same_scores(index.neighbours(history, decay, 200, proximity, backward),
                                   index.exact_neighbours(history, decay, 200, proximity, backward))


def test_leave_out_takes_the_exact_path():
    index = build(random_log(3), NeighbourBounds(per_item=2, users=2, window=1))
    history = index.history("u5")
    assert index.neighbours(history, proximity=1.0, backward=0.5, leave_out="u5") == \
        index.exact_neighbours(history, proximity=1.0, backward=0.5, leave_out="u5")


def test_bounds_cut_far_items_old_history_and_weak_neighbours():
    index = CoOccurrenceIndex(NeighbourBounds(window=2, per_item=2, max_history=2))
    for item in ["a", "b", "c", "far"]:
        index.add("u1", item)
    assert set(index.exact_neighbours(["a"], proximity=1.0)) == {"b", "c", "far"}
    assert set(index.neighbours(["a"], proximity=1.0)) == {"b", "c"}  # "far" is 3 steps away
    index.add("u2", "old"); index.add("u2", "x")
    # Only the two newest history items are read: "old"'s neighbour "x" has no say.
    assert "x" not in index.neighbours(["old", "b", "c"], decay=1.0, proximity=1.0)
    assert "x" in index.exact_neighbours(["old", "b", "c"], decay=1.0, proximity=1.0)


def test_a_sampled_item_is_scaled_up_to_all_its_users():
    index = CoOccurrenceIndex(NeighbourBounds(users=2))
    for user in ["u1", "u2", "u3", "u4"]:
        index.add(user, "a"); index.add(user, "b")
    assert math.isclose(index.neighbours(["a"])["b"], index.exact_neighbours(["a"])["b"])


def test_a_users_new_event_changes_their_recommendations_at_once():
    index = build([(f"p{n}", i) for n in range(30) for i in ("a", "b")] + [(f"q{n}", i) for n in range(30) for i in ("c", "d")])
    index.add("me", "a")
    assert list(index.neighbours(index.history("me"))) == ["b"]
    index.add("me", "c")
    after = index.neighbours(index.history("me"))
    assert "d" in after and "c" not in after and next(iter(after)) == "d"  # newest history counts most


def test_another_users_event_shows_in_a_small_items_list_at_once():
    index = build([("u1", "a"), ("u1", "b")])
    assert set(index.neighbours(["a"])) == {"b"}
    index.add("u2", "a"); index.add("u2", "new")
    assert set(index.neighbours(["a"])) == {"b", "new"}


def test_a_popular_items_list_waits_for_its_stale_fraction():
    index = build([(f"u{n}", i) for n in range(4) for i in ("a", "b")], NeighbourBounds(stale_fraction=0.5))
    assert set(index.neighbours(["a"])) == {"b"}
    index.add("u0", "c")  # one event near "a": a quarter of its users
    assert set(index.neighbours(["a"])) == {"b"}
    index.add("u1", "c")  # half of its users: recomputed
    assert set(index.neighbours(["a"])) == {"b", "c"}


def test_forget_user_leaves_no_trace_in_cached_lists():
    index = build([("u1", "a"), ("u1", "secret"), ("u2", "a"), ("u2", "b")], NeighbourBounds(stale_fraction=1e9))
    assert "secret" in index.neighbours(["a"])
    assert "secret" in index.neighbours(["b", "a"], decay=1.0)
    index.forget_user("u1")
    assert index.cached_lists() == 1  # "a"'s list held u1's sequence; "b"'s never did
    assert "secret" not in index.neighbours(["a"]) and "secret" not in index.neighbours(["b", "a"], decay=1.0)
    assert index.neighbours(["a"]) == index.exact_neighbours(["a"])


def test_snapshot_round_trip_equals_a_rebuild(tmp_path):
    events = random_log(4)
    rebuilt = build(events, NeighbourBounds(users=3))
    build(events).save(tmp_path / "index.npz", seq=1234)
    loaded, seq = CoOccurrenceIndex.load(tmp_path / "index.npz", NeighbourBounds(users=3))
    assert seq == 1234
    assert loaded._item_users == rebuilt._item_users
    assert [list(t) for t in loaded._item_users.values()] == [list(t) for t in rebuilt._item_users.values()]
    assert loaded.popular(100) == rebuilt.popular(100)
    # Events after the snapshot land the same way, and the most recent takers sampled are the same.
    for index in (loaded, rebuilt):
        index.add("u7", "i1"); index.add("new", "i2"); index.forget_user("u3")
    for user in [f"u{u}" for u in range(40)] + ["new"]:
        assert loaded.history(user) == rebuilt.history(user)
        assert loaded.neighbours(loaded.history(user), proximity=1.0, backward=0.5) == \
            rebuilt.neighbours(rebuilt.history(user), proximity=1.0, backward=0.5)


def test_an_empty_index_round_trips(tmp_path):
    CoOccurrenceIndex().save(tmp_path / "empty.npz", seq=0)
    index, seq = CoOccurrenceIndex.load(tmp_path / "empty.npz")
    assert seq == 0 and index.popular(5) == [] and index.neighbours(["a"]) == {}


def test_a_missing_or_damaged_snapshot_means_rebuild(tmp_path):
    path = tmp_path / "index.npz"
    assert CoOccurrenceIndex.load(path) is None
    build(random_log(5)).save(path, seq=9)
    whole = path.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"", b"not a snapshot",
                    whole[:300] + bytes([whole[300] ^ 0xFF]) + whole[301:]):
        path.write_bytes(damaged)
        assert CoOccurrenceIndex.load(path) is None
    assert CoOccurrenceIndex.load(tmp_path) is None  # a folder where the file should be


def test_an_inconsistent_snapshot_means_rebuild(tmp_path):
    index = build(random_log(6))
    good = IndexSnapshot.arrays(index, seq=3)
    for name, change in (("takers", lambda a: a[::-1].copy()), ("sequence_items", lambda a: a + 10_000),
                         ("format", lambda a: a + 1), ("seq", lambda a: a[:0])):
        path = tmp_path / f"{name}.npz"
        IndexSnapshot.write(path, {**good, name: change(good[name])})
        assert CoOccurrenceIndex.load(path) is None, name


def test_saving_replaces_the_file_whole(tmp_path):
    path = tmp_path / "index.npz"
    build([("u1", "a")]).save(path, seq=1)
    build([("u1", "a"), ("u2", "b")]).save(path, seq=2)
    index, seq = CoOccurrenceIndex.load(path)
    assert seq == 2 and index.history("u2") == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["index.npz"]  # no temporary file left
    assert np.load(path, allow_pickle=False)["format"][0] == 1


def test_the_cache_keeps_the_most_recently_used_lists():
    index = build(random_log(7), NeighbourBounds(max_lists=3))
    history = index.history("u1")
    exact = index.exact_neighbours(history, proximity=1.0, backward=0.5)
    assert_same_scores(index.neighbours(history, proximity=1.0, backward=0.5), exact)
    assert index.cached_lists() == min(3, len(history))
    index.neighbours(["i1"])  # another setting has its own lists
    assert index.cached_lists() == min(3, len(history)) + 1
    assert_same_scores(index.neighbours(history, proximity=1.0, backward=0.5), exact)  # evicted ones recomputed
