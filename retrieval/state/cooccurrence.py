"""Item co-occurrence: the collaborative signal, kept in memory and derived from the event log.

Item-kNN with cosine-normalised co-occurrence counts over users (the ``itemknn`` baseline and the
``collaborative_seq`` stage of ``make eval``; settings from benchmarks/tune.py).
It only has an opinion about items someone has interacted with; ``knows`` says which.

A request's score is separable per history item, so serving reads one cached, bounded neighbour
list per history item (``NeighbourBounds``) instead of walking every co-occurring sequence; the
cost of a recommendation then depends on the bounds, not on the size of the log. Training and
evaluation code that leaves a user out gets the exact computation over the whole log.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
from collections import defaultdict
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.storage.files import write_atomically

log = logging.getLogger("hybridrec.cooccurrence")

# Event types that say "this user wanted this item"; dislikes and searches are not co-occurrence.
POSITIVE_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "like", "rating"})

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class NeighbourBounds:
    """How much of the log one item's cached neighbour list reads, and how much a request reads.

    Memory: at most ``max_lists`` lists of at most ``per_item`` neighbours (an int32 id and a
    float64 co-occurrence each, 12 bytes) per (proximity, backward) setting in use, on top of the
    log's own sequences and takers: with the defaults at most 120 MB, and about 12 KB per item.
    When no bound is reached (few users per item, short sequences, short histories) the bounded
    scores equal the exact ones.

    Example::

        CoOccurrenceIndex(NeighbourBounds(per_item=100, window=20))
    """

    # Neighbours kept per item, best by co-occurrence / sqrt(their users). A request sums many
    # lists, and on a dense log an item moderately close to many history items is often outside
    # each one's top few hundred (benchmarks/dense_log.py, top-10 agreement).
    per_item: int = 1000
    max_lists: int = 10_000  # lists cached per setting; the least recently used go first
    users: int = 500  # an item's list reads its most recent takers only, scaled up to all of them
    window: int = 50  # positions either side of the item in each taker's sequence
    # History items older than the point where decay**age falls below this add nothing visible.
    min_history_weight: float = 1e-3
    max_history: int = 50  # the newest history items read, whatever the decay
    # A list is recomputed on use once the events touching its item since it was computed reach this
    # fraction of its users (at least one event): stale by a bounded share of its evidence.
    stale_fraction: float = 0.1
    # An audience (``CoOccurrenceIndex.audience_scores``) reads at most this many users, the most
    # recent takers of each of its items first; at most ``max_audiences`` are cached.
    audience_users: int = 5000
    max_audiences: int = 1000

    def history_length(self, decay: float) -> int:
        """How many of the newest history items a request reads at this decay.

        >>> NeighbourBounds().history_length(0.8)
        31
        """
        if 0.0 < decay < 1.0:
            return max(1, min(self.max_history, math.ceil(math.log(self.min_history_weight) / math.log(decay))))
        return self.max_history

    def offsets(self, proximity: float, backward: float) -> list[float]:
        """The weight of an item ``s`` steps from the anchor, at index ``window + s`` (the anchor: 0)."""
        sequential = proximity != 0.0 or backward != 1.0
        weights = []
        for steps in range(-self.window, self.window + 1):
            if steps == 0:
                weights.append(0.0)
            elif not sequential:
                weights.append(1.0)
            else:
                w = 1.0 / (1.0 + proximity * (abs(steps) - 1))
                weights.append(w * (backward if steps < 0 else 1.0))
        return weights


@dataclass
class Audience:
    """What the users who took any of some items (a category's, say) took: ``shares[n]`` of them
    took item ``codes[n]``. Kept with what it was read from: the codes of the items that define it
    (``item_codes``), how many takers those items had (``takers``) and the index's count of adds
    (``adds``) then."""

    codes: np.ndarray
    shares: np.ndarray
    size: int
    item_codes: np.ndarray
    takers: int
    adds: int


@dataclass
class NeighbourList:
    """One item's best co-occurring items (``codes``) with their co-occurrence (``weights``, not yet
    normalised by either item's users), and the item's state when it was computed."""

    codes: np.ndarray
    weights: np.ndarray
    users: int  # how many users had the item then
    touched: int  # the item's touch count then


class CoOccurrenceIndex:
    """Users' item sequences and items' user sets, updated as events arrive.

    Example::

        index = CoOccurrenceIndex()
        index.add("u1", "a"); index.add("u1", "b"); index.add("u2", "a"); index.add("u2", "c")
        index.neighbours(["a"])            # {"b": 0.5, "c": 0.5}
        index.save(path, seq=41); index, seq = CoOccurrenceIndex.load(path)
    """

    def __init__(self, bounds: NeighbourBounds | None = None) -> None:
        self.bounds = bounds or NeighbourBounds()
        self._codes: dict[str, int] = {}  # item id -> dense int code, never reused
        self._names: list[str] = []  # code -> item id
        self._user_items: dict[str, list[int]] = defaultdict(list)  # item codes, oldest first
        # item id -> its users, in the order of their latest take of it (dicts keep insertion order).
        self._item_users: dict[str, dict[str, None]] = {}
        self._counts = np.zeros(64, dtype=np.int64)  # users per item code
        self._touched = np.zeros(64, dtype=np.int64)  # events near the item in someone's sequence
        self._lists: dict[tuple[float, float], dict[int, NeighbourList]] = {}
        self._popular: list[tuple[str, int]] | None = None
        self._audiences: dict[str, Audience] = {}
        self._adds = 0  # events added since start (an audience's staleness counts them)
        self._lock = threading.RLock()

    # -- updates --------------------------------------------------------------------------------

    def _code(self, item_id: str) -> int:
        code = self._codes.get(item_id)
        if code is None:
            code = self._codes[item_id] = len(self._names)
            self._names.append(item_id)
            if code >= len(self._counts):
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
                self._touched = np.concatenate([self._touched, np.zeros_like(self._touched)])
        return code

    def _touch(self, items: list[int], position: int) -> None:
        """Counts an event at ``position`` against every item whose window covers it."""
        window = self.bounds.window
        near = items[max(0, position - window):position + window + 1]
        self._touched[near] += 1

    def add(self, user_id: str, item_id: str) -> None:
        with self._lock:
            code = self._code(item_id)
            items = self._user_items[user_id]
            users = self._item_users.setdefault(item_id, {})
            if user_id in users:
                position = items.index(code)
                self._touch(items, position)  # its neighbours at the old place lose it
                del items[position]  # keep each item once, at its latest position
                del users[user_id]  # and the user at the latest end of the item's takers
            else:
                self._counts[code] += 1
            items.append(code)
            users[user_id] = None
            self._touch(items, len(items) - 1)
            self._popular = None
            self._adds += 1

    def forget_user(self, user_id: str) -> None:
        with self._lock:
            if user_id in self._user_items:
                self._audiences.clear()  # any of them may count the forgotten user
            for code in self._user_items.pop(user_id, []):
                item_id = self._names[code]
                users = self._item_users.get(item_id)
                if users is not None and user_id in users:
                    del users[user_id]
                    self._counts[code] -= 1
                    if not users:
                        del self._item_users[item_id]
                # The user's sequence may be in this item's list: recompute it without them.
                for lists in self._lists.values():
                    lists.pop(code, None)
            self._popular = None

    # -- reads ----------------------------------------------------------------------------------

    def user_ids(self) -> list[str]:
        """Every user with a sequence here (forgetting by digest looks among them)."""
        with self._lock:
            return list(self._user_items)

    def history(self, user_id: str) -> list[str]:
        """The user's distinct items, oldest first."""
        with self._lock:
            return [self._names[c] for c in self._user_items.get(user_id, ())]

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
        logged future vote for itself. With ``leave_out`` the score is computed exactly over the
        whole log; without it, from each history item's bounded, cached list (``NeighbourBounds``).
        """
        if leave_out is not None:
            return self.exact_neighbours(history, decay, limit, proximity, backward, leave_out)
        with self._lock:
            scores = self._bounded_scores(history, decay, proximity, backward)
            seen = [self._codes[i] for i in history if i in self._codes]
            scores[seen] = 0.0
            return self._top(scores, limit)

    def _bounded_scores(self, history: list[str], decay: float, proximity: float, backward: float) -> np.ndarray:
        """Every item's score, indexed by code: the history's neighbour lists, decayed and
        normalised with today's user counts (callers hold the lock)."""
        newest = list(reversed(history))[:self.bounds.history_length(decay)]
        codes, weights = [], []
        for age, item_id in enumerate(newest):
            code = self._codes.get(item_id)
            if code is None or self._counts[code] == 0:
                continue
            neighbour_list = self._fresh_list(code, proximity, backward)
            codes.append(neighbour_list.codes)
            weights.append(neighbour_list.weights * (decay**age / math.sqrt(self._counts[code])))
        size = len(self._names)
        if not codes:
            return np.zeros(size)
        summed = np.bincount(np.concatenate(codes), np.concatenate(weights), minlength=size)
        return summed / np.sqrt(np.maximum(self._counts[:size], 1))

    def _top(self, scores: np.ndarray, limit: int) -> dict[str, float]:
        """The ``limit`` best positive scores by (-score, id), as the exact path orders them."""
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > limit > 0:
            cutoff = np.partition(scores[candidates], len(candidates) - limit)[len(candidates) - limit]
            candidates = candidates[scores[candidates] >= cutoff]  # ties at the cut-off stay to be ordered by id
        ranked = sorted(((self._names[c], float(scores[c])) for c in candidates), key=lambda kv: (-kv[1], kv[0]))
        return dict(ranked[:limit])

    def _fresh_list(self, code: int, proximity: float, backward: float) -> NeighbourList:
        """The item's cached list, recomputed first if it is missing or stale (callers hold the lock)."""
        lists = self._lists.setdefault((proximity, backward), {})
        cached = lists.pop(code, None)  # re-inserted last: the dict's order is least recently used first
        if cached is not None:
            changes = int(self._touched[code]) - cached.touched
            if changes >= max(1.0, self.bounds.stale_fraction * cached.users):
                cached = None
        if cached is None:
            cached = self._compute_list(code, proximity, backward)
            if len(lists) >= self.bounds.max_lists:
                del lists[next(iter(lists))]
        lists[code] = cached
        return cached

    def _compute_list(self, code: int, proximity: float, backward: float) -> NeighbourList:
        """The item's co-occurrence over the windows of its most recent takers, scaled up to all of
        its takers, keeping the best ``per_item`` by co-occurrence / sqrt(their users)."""
        bounds = self.bounds
        takers = self._item_users.get(self._names[code], {})
        offsets, window = bounds.offsets(proximity, backward), bounds.window
        near: list[int] = []
        near_weights: list[float] = []
        sampled = 0
        for user in islice(reversed(takers), bounds.users):
            items = self._user_items[user]
            position = items.index(code)
            start, stop = max(0, position - window), min(len(items), position + window + 1)
            near += items[start:stop]
            near_weights += offsets[window - (position - start):window + (stop - position)]
            sampled += 1
        size = len(self._names)
        cooccurrence = np.bincount(np.asarray(near, dtype=np.int64), np.asarray(near_weights, dtype=np.float64),
                                   minlength=size) if near else np.zeros(size)
        cooccurrence[code] = 0.0
        if sampled < len(takers):
            cooccurrence *= len(takers) / sampled
        kept = np.flatnonzero(cooccurrence > 0)
        if len(kept) > bounds.per_item:
            strength = cooccurrence[kept] / np.sqrt(np.maximum(self._counts[kept], 1))
            kept = kept[np.argpartition(-strength, bounds.per_item - 1)[:bounds.per_item]]
        return NeighbourList(kept.astype(np.int32), cooccurrence[kept], len(takers), int(self._touched[code]))

    def exact_neighbours(self, history: list[str], decay: float = 0.8, limit: int = 200, proximity: float = 0.0,
                         backward: float = 1.0, leave_out: str | None = None) -> dict[str, float]:
        """``neighbours`` computed over every sequence of every user who took a history item: cost
        grows with the log. Training and evaluation (``leave_out``) use it; so do the tests and
        benchmarks/dense_log.py, as the reference the bounded lists are checked against."""
        scores: dict[int, float] = defaultdict(float)
        sequential = proximity != 0.0 or backward != 1.0
        with self._lock:
            seen = {self._codes[i] for i in history if i in self._codes}
            for age, item_id in enumerate(reversed(history)):
                users = self._item_users.get(item_id)
                if leave_out is not None and users and leave_out in users:
                    users = users.keys() - {leave_out}
                if not users:
                    continue
                code = self._codes[item_id]
                weight = decay**age / math.sqrt(len(users))
                counts: dict[int, float] = defaultdict(float)
                for user in users:
                    sequence = self._user_items[user]
                    anchor = sequence.index(code) if sequential else 0
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
                    scores[other] += weight * c / math.sqrt(max(1, self._users(self._names[other], leave_out)))
            top = sorted(((self._names[c], s) for c, s in scores.items()), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return dict(top)

    def shared_users(self, a: str, b: str) -> int:
        """How many users have both items (the raw co-occurrence behind an explanation)."""
        with self._lock:
            return len(self._item_users.get(a, {}).keys() & self._item_users.get(b, {}).keys())

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

    def audience_scores(self, groups: Sequence[tuple[str, float, list[str]]], limit: int,
                        lift: float = 0.75, smoothing: float = 5.0) -> dict[str, float]:
        """Items by what the audiences of some item groups took, over how often everyone takes them.

        Each group is ``(key, weight, item_ids)``: its audience is the users who took any of
        ``item_ids`` (at most ``bounds.audience_users``, the most recent takers of each item in
        turn), and an item scores ``weight x share`` of that audience who took it, summed over the
        groups and divided by ``((its users + smoothing) / all users) ** lift``: what sets these
        people apart, not only what everyone takes. The items that define an audience score too.
        An audience is cached under ``key`` (``_audience_stale`` says until when); forgetting a
        user drops every cached audience.

        Example::

            index.audience_scores([("Labels", 1.0, label_ids), ("Binders", 0.7, binder_ids)], limit=100)
        """
        with self._lock:
            size = len(self._names)
            summed = np.zeros(size)
            for key, weight, item_ids in groups:
                audience = self._fresh_audience(key, item_ids)
                summed[audience.codes] += weight * audience.shares
            everyone = max(1, len(self._user_items))
            return self._top(summed / ((self._counts[:size] + smoothing) / everyone) ** lift, limit)

    def audience_share(self, key: str, item_id: str) -> tuple[float, int] | None:
        """The share of the audience cached under ``key`` who took ``item_id``, and its size (None
        when none is cached): the evidence behind an ``audience_scores`` score."""
        with self._lock:
            cached = self._audiences.get(key)
            code = self._codes.get(item_id)
            if cached is None or code is None:
                return None
            at = int(np.searchsorted(cached.codes, code))  # ``codes`` is sorted (``flatnonzero``)
            taken = at < len(cached.codes) and cached.codes[at] == code
            return (float(cached.shares[at]) if taken else 0.0), cached.size

    def everyone_share(self, item_id: str) -> float:
        """The share of every user with a sequence who took the item."""
        with self._lock:
            return self._users(item_id, None) / max(1, len(self._user_items))

    def _audience_stale(self, cached: Audience, item_codes: np.ndarray) -> bool:
        """Whether an audience must be read again (callers hold the lock): its items changed, or
        they gained new takers reaching ``bounds.stale_fraction`` of its size (at least one), or
        as many events as it has people arrived from anyone (what its people took since)."""
        if not np.array_equal(cached.item_codes, item_codes):
            return True
        takers = int(self._counts[item_codes].sum())
        return (takers - cached.takers >= max(1.0, self.bounds.stale_fraction * cached.size)
                or self._adds - cached.adds >= max(1, cached.size))

    def _fresh_audience(self, key: str, item_ids: list[str]) -> Audience:
        """The audience cached under ``key``, read again first if it is missing or stale (callers
        hold the lock)."""
        item_codes = np.fromiter((self._codes[i] for i in item_ids if i in self._codes), dtype=np.int64)
        cached = self._audiences.pop(key, None)  # re-inserted last: least recently used first
        if cached is None or self._audience_stale(cached, item_codes):
            cached = self._read_audience(item_codes)
            if self._audiences and len(self._audiences) >= self.bounds.max_audiences:
                del self._audiences[next(iter(self._audiences))]
        self._audiences[key] = cached
        return cached

    def _read_audience(self, item_codes: np.ndarray) -> Audience:
        """Who took the items (the most recent takers of each in turn, up to the bound) and what
        each of them took, each user once (callers hold the lock)."""
        audience: dict[str, None] = {}
        cap = self.bounds.audience_users
        recent = [reversed(self._item_users.get(self._names[code], {})) for code in item_codes.tolist()]
        while recent and len(audience) < cap:  # round-robin: a big item cannot crowd out the rest
            for takers in list(recent):
                user = next(takers, None)
                if user is None:
                    recent.remove(takers)
                elif len(audience) < cap:
                    audience[user] = None
        taken = [np.asarray(self._user_items[user], dtype=np.int64) for user in audience]
        counts = (np.bincount(np.concatenate(taken), minlength=len(self._names)) if taken
                  else np.zeros(len(self._names), dtype=np.int64))
        codes = np.flatnonzero(counts)
        return Audience(codes, counts[codes] / max(1, len(audience)), len(audience), item_codes,
                        int(self._counts[item_codes].sum()), self._adds)

    def warm(self, proximity: float = 0.0, backward: float = 1.0) -> int:
        """Computes the missing or stale neighbour lists of the most taken items now, as many as the
        cache keeps, for one setting (after a start-up, off the request path), and says how many it
        computed. Takes the lock one item at a time."""
        with self._lock:
            most_taken = np.argsort(-self._counts[:len(self._names)], kind="stable")[:self.bounds.max_lists]
        computed = 0
        for code in most_taken.tolist():
            with self._lock:
                lists = self._lists.get((proximity, backward), {})
                before = lists.get(code)
                if self._counts[code] > 0 and self._fresh_list(code, proximity, backward) is not before:
                    computed += 1
        return computed

    def cached_lists(self) -> int:
        """How many neighbour lists are cached, over every setting (memory: ``NeighbourBounds``)."""
        with self._lock:
            return sum(len(lists) for lists in self._lists.values())

    # -- snapshot -------------------------------------------------------------------------------

    def save(self, path: str | Path, seq: int) -> None:
        """Writes the sequences and takers to ``path`` (numpy ``.npz``, no pickle), atomically:
        a temporary file in the same folder, fsynced, then renamed over ``path``. ``seq`` is the
        event-log position this state includes; ``load`` hands it back."""
        with self._lock:
            arrays = IndexSnapshot.arrays(self, seq)
        IndexSnapshot.write(Path(path), arrays)

    @classmethod
    def load(cls, path: str | Path, bounds: NeighbourBounds | None = None) -> tuple[CoOccurrenceIndex, int] | None:
        """The index saved at ``path`` and the event-log position it includes, or None where the
        file is missing, unreadable or inconsistent: the caller rebuilds from the log then."""
        try:
            return IndexSnapshot.read(Path(path), cls(bounds))
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any damage to a derived file means "rebuild", never a failed start
            log.warning("co-occurrence snapshot %s unusable (%s: %s); rebuild from the log", path,
                        type(exc).__name__, exc)
            return None


class IndexSnapshot:
    """The ``.npz`` layout of a saved index: item and user ids as UTF-8 bytes with offsets, each
    user's item codes oldest first, and each item's users in the order of their latest take.

    Example::

        IndexSnapshot.write(path, IndexSnapshot.arrays(index, seq=7))
        index, seq = IndexSnapshot.read(path, CoOccurrenceIndex())
    """

    @staticmethod
    def _pack(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets

    @staticmethod
    def _unpack(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
        data = blob.tobytes()
        bounds = offsets.tolist()
        return [data[a:b].decode() for a, b in zip(bounds, bounds[1:])]

    @classmethod
    def arrays(cls, index: CoOccurrenceIndex, seq: int) -> dict[str, np.ndarray]:
        """The index's state as arrays (callers hold its lock)."""
        users = list(index._user_items)
        user_code = {u: n for n, u in enumerate(users)}
        sequences = [index._user_items[u] for u in users]
        items_with_takers = [(index._codes[i], takers) for i, takers in index._item_users.items()]
        names, name_offsets = cls._pack(index._names)
        user_ids, user_offsets = cls._pack(users)
        return {
            "format": np.array([SNAPSHOT_FORMAT], dtype=np.int64),
            "seq": np.array([seq], dtype=np.int64),
            "item_names": names, "item_name_offsets": name_offsets,
            "user_ids": user_ids, "user_id_offsets": user_offsets,
            "sequence_offsets": np.cumsum([0] + [len(s) for s in sequences], dtype=np.int64),
            "sequence_items": np.fromiter((c for s in sequences for c in s), dtype=np.int32),
            "taken_items": np.array([c for c, _ in items_with_takers], dtype=np.int32),
            "taker_offsets": np.cumsum([0] + [len(t) for _, t in items_with_takers], dtype=np.int64),
            "takers": np.fromiter((user_code[u] for _, t in items_with_takers for u in t), dtype=np.int32),
        }

    @staticmethod
    def write(path: Path, arrays: dict[str, np.ndarray]) -> None:
        write_atomically(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def read(cls, path: Path, index: CoOccurrenceIndex) -> tuple[CoOccurrenceIndex, int]:
        """Fills an empty ``index`` from ``path``; raises on any damage or inconsistency."""
        with np.load(path, allow_pickle=False) as z:
            a = {name: z[name] for name in z.files}
        if int(a["format"][0]) != SNAPSHOT_FORMAT:
            raise ValueError(f"format {int(a['format'][0])}, expected {SNAPSHOT_FORMAT}")
        names = cls._unpack(a["item_names"], a["item_name_offsets"])
        users = cls._unpack(a["user_ids"], a["user_id_offsets"])
        seq_offsets, seq_items = a["sequence_offsets"], a["sequence_items"]
        taken, taker_offsets, takers = a["taken_items"], a["taker_offsets"], a["takers"]
        if (len(seq_offsets) != len(users) + 1 or len(taker_offsets) != len(taken) + 1
                or seq_offsets[-1] != len(seq_items) or taker_offsets[-1] != len(takers)
                or len(takers) != len(seq_items)):
            raise ValueError("array lengths disagree")
        if len(set(names)) != len(names) or len(set(users)) != len(users):
            raise ValueError("an id twice")
        for codes, size in ((seq_items, len(names)), (taken, len(names)), (takers, len(users))):
            if len(codes) and (codes.min() < 0 or codes.max() >= size):
                raise ValueError("a code out of range")
        # Both directions must hold the same (user, item) pairs, each once.
        by_user = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(seq_offsets)) * len(names) + seq_items
        by_item = takers.astype(np.int64) * len(names) + np.repeat(taken.astype(np.int64), np.diff(taker_offsets))
        by_user.sort()
        by_item.sort()
        if not np.array_equal(by_user, by_item) or (len(by_user) > 1 and (np.diff(by_user) == 0).any()):
            raise ValueError("sequences and takers disagree")
        for name in names:
            index._code(name)
        bounds = seq_offsets.tolist()
        items = seq_items.tolist()
        for n, user in enumerate(users):
            index._user_items[user] = items[bounds[n]:bounds[n + 1]]
        bounds = taker_offsets.tolist()
        taker_list = takers.tolist()
        for n, code in enumerate(taken.tolist()):
            index._item_users[names[code]] = dict.fromkeys(users[u] for u in taker_list[bounds[n]:bounds[n + 1]])
            index._counts[code] = bounds[n + 1] - bounds[n]
        return index, int(a["seq"][0])
