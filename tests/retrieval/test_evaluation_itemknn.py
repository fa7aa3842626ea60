"""The evaluation's vectorised item-kNN baseline (``replay.ItemKNN``) against the exact walk it replaces."""

import random

import pytest

from retrieval.evaluation.replay import ItemKNN
from retrieval.state.cooccurrence import CoOccurrenceIndex, NeighbourBounds


def _random_index(seed: int, users: int = 60, items: int = 80, max_length: int = 70) -> CoOccurrenceIndex:
    rng = random.Random(seed)
    # Small bounds, so the service's bounded lists (a few recent takers, a narrow window) differ
    # from the exact scores: the baseline must not read them.
    index = CoOccurrenceIndex(NeighbourBounds(users=5, window=3, per_item=10))
    names = [f"i{n:03d}" for n in range(items)]
    weights = [1.0 / (n + 1) for n in range(items)]  # skewed, so lists have ties and popular items
    for u in range(users):
        for _ in range(rng.randint(1, max_length)):
            index.add(f"u{u}", rng.choices(names, weights)[0])  # repeats move the item to its latest place
    return index


def _same(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)
    assert got == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_itemknn_equals_the_exact_walk(seed):
    index = _random_index(seed)
    knn = ItemKNN(index)
    rng = random.Random(seed)
    users = index.user_ids()
    cap = index.bounds.history_length(0.8)
    for _ in range(40):
        history = index.history(rng.choice(users))[-rng.randint(1, cap):]
        if rng.random() < 0.3:
            history = history + ["never-seen"]  # an item nobody took contributes nothing
        for limit in (5, 200):
            _same(knn.neighbours(history, decay=0.8, limit=limit),
                  index.exact_neighbours(history, decay=0.8, limit=limit))
    # Ad-hoc histories (the cold-users slice: one item, nobody's own sequence).
    for item in rng.sample(sorted({i for u in users for i in index.history(u)}), 10):
        _same(knn.neighbours([item], decay=0.8, limit=200), index.exact_neighbours([item], decay=0.8, limit=200))


def test_itemknn_reads_the_newest_items_of_a_long_history_and_excludes_all():
    index = _random_index(4, users=40, items=120, max_length=110)
    knn = ItemKNN(index)
    cap = index.bounds.history_length(0.8)
    longest = max(index.user_ids(), key=lambda u: len(index.history(u)))
    history = index.history(longest)
    assert len(history) > cap + 10
    want = index.exact_neighbours(history[-cap:], decay=0.8, limit=10_000)
    want = {i: s for i, s in want.items() if i not in history}
    got = knn.neighbours(history, decay=0.8, limit=10_000)
    _same(got, want)
    assert not set(got) & set(history)


def test_itemknn_leaves_the_rest_to_the_index():
    index = _random_index(5)
    knn = ItemKNN(index)
    history = index.history(index.user_ids()[0])[-5:]
    user = index.user_ids()[1]
    assert knn.neighbours(history, proximity=1.0, backward=0.5) == index.neighbours(history, proximity=1.0,
                                                                                     backward=0.5)
    assert knn.neighbours(history, leave_out=user) == index.exact_neighbours(history, leave_out=user)
    assert knn.popular(5) == index.popular(5)
    assert knn.knows(history[0]) and not knn.knows("never-seen")
    assert ItemKNN(CoOccurrenceIndex()).neighbours(["a"]) == {}
