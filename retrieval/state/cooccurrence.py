"""Item co-occurrence: the collaborative signal, kept in memory and derived from the event log.

Item-kNN with cosine-normalised co-occurrence counts over users (the ``itemknn`` baseline and the
``collaborative_seq`` stage of ``make eval``; settings from benchmarks/tune.py).
It only has an opinion about items someone has interacted with; ``knows`` says which.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import defaultdict

# Event types that say "this user wanted this item"; dislikes and searches are not co-occurrence.
POSITIVE_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "like", "rating"})


class CoOccurrenceIndex:
    """Users' item sequences and items' user sets, updated as events arrive.

    Example::

        index = CoOccurrenceIndex()
        index.add("u1", "a"); index.add("u1", "b"); index.add("u2", "a"); index.add("u2", "c")
        index.neighbours(["a"])            # {"b": 0.5, "c": 0.5}
    """

    def __init__(self) -> None:
        self._user_items: dict[str, list[str]] = defaultdict(list)
        self._item_users: dict[str, set[str]] = defaultdict(set)
        self._popular: list[tuple[str, int]] | None = None
        self._lock = threading.RLock()

    def add(self, user_id: str, item_id: str) -> None:
        with self._lock:
            items = self._user_items[user_id]
            if item_id in self._item_users and user_id in self._item_users[item_id]:
                items.remove(item_id)  # keep each item once, at its latest position
            items.append(item_id)
            self._item_users[item_id].add(user_id)
            self._popular = None

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            for item_id in self._user_items.pop(user_id, []):
                users = self._item_users.get(item_id)
                if users is not None:
                    users.discard(user_id)
                    if not users:
                        del self._item_users[item_id]
            self._popular = None

    def history(self, user_id: str) -> list[str]:
        """The user's distinct items, oldest first."""
        with self._lock:
            return list(self._user_items.get(user_id, ()))

    def _users(self, item_id: str, leave_out: str | None) -> int:
        """How many users took the item, not counting ``leave_out`` (callers hold the lock)."""
        users = self._item_users.get(item_id, ())
        return len(users) - (leave_out is not None and leave_out in users)

    def knows(self, item_id: str, leave_out: str | None = None) -> bool:
        """Whether the collaborative signal has an opinion about this item (anyone interacted);
        ``leave_out`` as in ``neighbours``: an item only that user took is unknown without them."""
        with self._lock:
            return self._users(item_id, leave_out) > 0

    def user_counts(self, item_ids: list[str], leave_out: str | None = None) -> dict[str, int]:
        """How many users took each item, not counting ``leave_out``."""
        with self._lock:
            return {item_id: self._users(item_id, leave_out) for item_id in item_ids}

    def neighbours(self, history: list[str], decay: float = 0.8, limit: int = 200,
                   proximity: float = 0.0, backward: float = 1.0, leave_out: str | None = None) -> dict[str, float]:
        """Items that co-occur with the history (newest last), scored by decayed cosine co-occurrence.

        ``proximity`` > 0 makes it sequential: in another user's sequence, an item ``d`` steps away
        from a history item counts ``1 / (1 + proximity x (|d| - 1))``, and ``backward`` scales
        items that came before it rather than after. ``proximity=0, backward=1`` is plain item-kNN.
        ``leave_out`` ignores one user's own sequence: training on the log must not let a user's
        logged future vote for itself.
        """
        scores: dict[str, float] = defaultdict(float)
        seen = set(history)
        sequential = proximity != 0.0 or backward != 1.0
        with self._lock:
            for age, item_id in enumerate(reversed(history)):
                users = self._item_users.get(item_id)
                if leave_out is not None and users and leave_out in users:
                    users = users - {leave_out}
                if not users:
                    continue
                weight = decay**age / math.sqrt(len(users))
                counts: dict[str, float] = defaultdict(float)
                for user in users:
                    sequence = self._user_items[user]
                    anchor = sequence.index(item_id) if sequential else 0
                    for position, other in enumerate(sequence):
                        if other in seen:
                            continue
                        if sequential:
                            steps = position - anchor
                            w = 1.0 / (1.0 + proximity * (abs(steps) - 1))
                            counts[other] += w * (backward if steps < 0 else 1.0)
                        else:
                            counts[other] += 1.0
                for other, c in counts.items():
                    scores[other] += weight * c / math.sqrt(max(1, self._users(other, leave_out)))
        top = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return dict(top)

    def shared_users(self, a: str, b: str) -> int:
        """How many users have both items (the raw co-occurrence behind an explanation)."""
        with self._lock:
            return len(self._item_users.get(a, set()) & self._item_users.get(b, set()))

    def popular(self, limit: int) -> list[tuple[str, int]]:
        """Items by number of distinct users, most first (ties by id, for determinism)."""
        with self._lock:
            # Cached until the next event; rebuilt with a bounded heap, not a sort of every item.
            if self._popular is None or (len(self._popular) < limit < len(self._item_users)):
                self._popular = heapq.nsmallest(
                    max(limit, 1000), ((i, len(u)) for i, u in self._item_users.items()),
                    key=lambda kv: (-kv[1], kv[0]),
                )
            return self._popular[:limit]
