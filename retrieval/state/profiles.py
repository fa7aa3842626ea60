"""Users: events in, profiles out.

An event is committed to the log first, then the user's profile vector is recomputed from the log
and written to the users collection before the call returns, so the next request sees it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders import ProfileEvent, aggregate_profile
from encoders.profile import event_weights
from retrieval.limits import MAX_EVENTS_PER_USER
from retrieval.state.catalogue import Catalogue, Rejection
from retrieval.state.cooccurrence import POSITIVE_TYPES, CoOccurrenceIndex
from retrieval.storage.event_log import EventLog, LoggedEvent, keyed_users
from retrieval.storage.layout import USERS
from retrieval.storage.records import InvalidRecord, ParsedEvent, check_id, parse_event, parse_preferences
from retrieval.storage.vector_store import CollectionSpec, StoredPoint, VectorStore

# Log position up to which every user's stored profile is current; see ``repair``.
PROFILES_SEQ = "profiles_seq"


@dataclass(frozen=True)
class ProfileConfig:
    half_life_days: float = 30.0
    position_decay: float = 0.5  # chosen on validation (benchmarks/tune.py, round 1)
    preference_prior: float = 2.0
    max_events: int = 200  # the profile reads the user's newest events only


@dataclass
class EventReport:
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    duplicate_rows: list[int] = field(default_factory=list)  # rows whose event_id the user had logged already

    @property
    def duplicates(self) -> int:
        """Events not logged again: their user had logged their ``event_id`` already (a retry)."""
        return len(self.duplicate_rows)


class _TextVectors:
    """A small LRU of encoded texts: search queries and preference sentences recur."""

    def __init__(self, encode, size: int = 4096):
        self._encode = encode
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size

    def get(self, text: str) -> np.ndarray:
        vector = self._cache.get(text)
        if vector is None:
            vector = self._encode([text])[0]
            self._cache[text] = vector
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return vector

    def warm(self, texts: list[str]) -> None:
        """Encode the texts not cached yet in one batch (one at a time, ``get`` is about ten times
        slower per text: a refresh round of many new searches would fall behind the log)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))[-self._size:]
        if missing:
            for text, vector in zip(missing, self._encode(missing)):
                self._cache[text] = vector
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)


def _salted_point(user_id: str, salt: bytes) -> str:
    return "profile:" + hashlib.sha256(salt + user_id.encode()).hexdigest()


class StaleProfiles:
    """Users whose stored profile is behind the log: for each, the first and last sequence number
    of their events not yet written into it. Shared by every ``Profiles`` of an engine, so a
    reindex's new profiles see the same set.

    Example::

        stale = StaleProfiles()
        stale.mark({"u1": 7})
        "u1" in stale                 # True until refreshed(...)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, int]] = {}
        self._last_marked: int | None = None

    def mark(self, latest: dict[str, int]) -> None:
        with self._lock:
            for user_id, seq in latest.items():
                first, _ = self._pending.get(user_id, (seq, seq))
                self._pending[user_id] = (first, seq)
                self._last_marked = max(self._last_marked or 0, seq)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return dict(self._pending)

    def refreshed(self, snapshot: dict[str, tuple[int, int]]) -> None:
        """The users of ``snapshot`` were refreshed from the log read after it was taken: their
        events up to the snapshot's last are in the stored profile; later ones stay pending."""
        with self._lock:
            for user_id, (_, last) in snapshot.items():
                now = self._pending.get(user_id)
                if now is None:
                    continue
                if now[1] == last:
                    del self._pending[user_id]
                else:
                    self._pending[user_id] = (last + 1, now[1])

    def discard(self, user_id: str) -> None:
        with self._lock:
            self._pending.pop(user_id, None)

    @property
    def last_marked(self) -> int | None:
        return self._last_marked

    def synced_through(self) -> int | None:
        """The log position up to which every marked event is in a stored profile (None: nothing
        was marked yet)."""
        with self._lock:
            if self._pending:
                return min(first for first, _ in self._pending.values()) - 1
            return self._last_marked


class Profiles:
    """User events, stated preferences and profile vectors.

    Example::

        profiles.record([{"user_id": "u1", "type": "click", "item_id": "sku-1"}])
        profiles.vector("u1")        # unit vector in the item space
    """

    def __init__(self, store: VectorStore, log: EventLog, catalogue: Catalogue, index: CoOccurrenceIndex,
                 config: ProfileConfig = ProfileConfig(), collection: str = USERS,
                 stale: StaleProfiles | None = None, position_key: str = PROFILES_SEQ,
                 compute_missing: bool = False):
        self.store = store
        self.log = log
        self.catalogue = catalogue
        self.index = index
        self.config = config
        self.collection = collection
        self.texts = _TextVectors(catalogue.encoder.encode)
        self.stale = stale if stale is not None else StaleProfiles()
        self.position_key = position_key  # where this instance records how far its stored profiles are
        # Compute a profile the store lacks from the log (an instance that joined a shared log after
        # the user's events) instead of serving none.
        self.compute_missing = compute_missing
        self.written: Callable[[list[int]], None] | None = None  # told the numbers of this instance's writes
        # One log writer at a time (the log, the co-occurrence index and the stale set move together),
        # and one profile-store writer (a refresh never writes back a user being forgotten).
        self._write_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._unflushed = False
        self._salts: dict[str, bytes] = {}
        self._event_counts: dict[str, int] = {}  # users' logged events, read once per user (see commit)
        store.ensure_collection(CollectionSpec(collection, catalogue.encoder.dim, keyword_indexes=("id",)))

    def point_id(self, user_id: str) -> str | None:
        """The id the user's profile has in the vector store: a hash of the id with the user's own
        random salt, never the id itself (None: no salt, so no profile was ever written). Vector
        stores keep deleted points in their files until compaction; once forgetting has deleted the
        salt, nothing links such a leftover to the user."""
        salt = self._salts.get(user_id)
        if salt is None:
            salt = self.log.profile_salt(user_id)
            if salt is None:
                return None
            self._remember_salts({user_id: salt})
        return _salted_point(user_id, salt)

    def _remember_salts(self, salts: dict[str, bytes]) -> None:
        if len(self._salts) + len(salts) > 100_000:
            self._salts.clear()
        self._salts.update(salts)

    # -- writes ---------------------------------------------------------------------------------

    def record(self, rows: list[Any], now: float | None = None) -> EventReport:
        """Validate and log events; unknown items are rejected. Profiles follow before returning."""
        report = self.commit([rows], now)[0]
        self.refresh_stale(now)
        return report

    def commit(self, requests: list[list[Any]], now: float | None = None) -> list[EventReport]:
        """Validate several requests' events and log every valid one in one transaction (one
        durable write however many requests); returns one report per request. The users' stored
        profiles are then stale until ``refresh_stale``, and ``vector`` computes them from the log
        meanwhile, so the next read reflects the events either way."""
        now = time.time() if now is None else now
        reports = [EventReport() for _ in requests]
        parsed: list[tuple[int, int, ParsedEvent]] = []
        for r, rows in enumerate(requests):
            for index, raw in enumerate(rows):
                try:
                    parsed.append((r, index, parse_event(raw, now)))
                except InvalidRecord as err:
                    raw_id = raw.get("user_id") if isinstance(raw, dict) and isinstance(raw.get("user_id"), str) else None
                    reports[r].rejected.append(Rejection(index, raw_id, str(err), err.field))
        known = self.catalogue.existing([e.item_id for _, _, e in parsed if e.item_id])
        with self._write_lock:
            valid: list[tuple[int, int, ParsedEvent]] = []
            taken: dict[str, int] = {}
            for r, index, event in parsed:
                if event.item_id is not None and event.item_id not in known:
                    reports[r].rejected.append(
                        Rejection(index, event.user_id, f"item_id: unknown item {event.item_id!r}", "item_id"))
                elif self._event_count(event.user_id) + taken.get(event.user_id, 0) >= MAX_EVENTS_PER_USER:
                    reports[r].rejected.append(Rejection(
                        index, event.user_id, f"user_id: {event.user_id!r} has {MAX_EVENTS_PER_USER:,} events, the "
                        "most one user may have (a profile reads only the newest)", "user_id"))
                else:
                    valid.append((r, index, event))
                    taken[event.user_id] = taken.get(event.user_id, 0) + 1
            seqs = self.log.append([e for _, _, e in valid])  # durable from here on
            if self.written is not None:
                self.written([seq for seq in seqs if seq is not None])
            latest: dict[str, int] = {}
            for (r, index, event), seq in zip(valid, seqs):
                if seq is None:  # its event id is logged already: a retry, taken in the first time
                    reports[r].duplicate_rows.append(index)
                    continue
                reports[r].accepted += 1
                latest[event.user_id] = seq
                if event.user_id in self._event_counts:  # else read from the log when next needed
                    self._event_counts[event.user_id] += 1
                if event.item_id is not None and event.type in POSITIVE_TYPES:
                    self.index.add(event.user_id, event.item_id)
            self.stale.mark(latest)
        for report in reports:
            report.rejected.sort(key=lambda rejection: rejection.index)
        return reports

    def _event_count(self, user_id: str) -> int:
        """The user's logged events (held by the write lock)."""
        count = self._event_counts.get(user_id)
        if count is None:
            if len(self._event_counts) > 200_000:
                self._event_counts.clear()
            count = self._event_counts[user_id] = sum(self.log.event_counts(user_id).values())
        return count

    def refresh_stale(self, now: float | None = None, durable: bool = True) -> int:
        """Write the profiles of users whose events were committed since their last refresh;
        returns how many. ``durable``: also flush the profile store and move the log position up
        to which every stored profile is current (``repair`` starts there after a kill); without
        it the profiles are written but only a later durable round records them."""
        with self._store_lock:
            pending = self.stale.snapshot()
            if pending:
                self.refresh(sorted(pending), now=now, durable=False)
                self.stale.refreshed(pending)
                self._unflushed = True
            if durable:
                synced = self.stale.synced_through()  # read before the flush, which covers it
                if self._unflushed:
                    self.store.flush(self.collection)
                    self._unflushed = False
                if synced is not None and synced > int(self.log.get_meta(self.position_key, "0")):
                    self.log.set_meta(self.position_key, str(synced))
        return len(pending)

    @property
    def unflushed(self) -> bool:
        """Profiles were written that a durable ``refresh_stale`` has not yet flushed."""
        return self._unflushed

    def repair(self) -> int:
        """Refresh profiles of users whose events or stated preferences were logged but whose
        profile write did not happen (the process died in between). Returns how many were refreshed."""
        synced = int(self.log.get_meta(self.position_key, "0"))
        head = self.log.head()  # read first: what is written meanwhile is after it
        if synced >= head:
            return 0
        users = self.log.users_after(synced)
        self.refresh(users)
        self.log.set_meta(self.position_key, str(head))
        return len(users)

    def lag(self) -> int:
        """Logged events this process has not taken in: neither in a stored profile nor marked
        stale (which reads compute from the log). 0 once caught up."""
        taken_in = max(int(self.log.get_meta(self.position_key, "0")), self.stale.last_marked or 0)
        return self.log.count(after=taken_in) if self.log.max_seq() > taken_in else 0

    def follow(self, events: list[LoggedEvent], preferences: list[tuple[int, str]], forgotten: list[str],
               own: Callable[[int], bool] | None = None) -> int:
        """Take in what another instance wrote: its events join the co-occurrence index and make
        their users' stored profiles stale (computed from the log until rewritten), as do changed
        stated preferences; ``forgotten`` users (``EventLog.user_key`` digests) are dropped from
        everything this instance keeps. ``own(seq)``: whether an event is this instance's, taken
        in already; asked under the write lock, which a write holds from its commit until it has
        said so. Returns how many events were taken in."""
        with self._write_lock:
            events = [e for e in events if own is None or not own(e.seq)]
            latest: dict[str, int] = {}
            for e in events:
                if e.item_id is not None and e.type in POSITIVE_TYPES:
                    self.index.add(e.user_id, e.item_id)
                latest[e.user_id] = e.seq
                self._event_counts.pop(e.user_id, None)  # re-read: the limit counts every instance's events
            for seq, user_id in preferences:
                latest[user_id] = max(latest.get(user_id, 0), seq)
            self.stale.mark(latest)
        if forgotten:
            keys = set(forgotten)
            candidates = set(self.index.user_ids()) | set(self.stale.snapshot()) | set(self._salts)
            for user_id in keyed_users(self.log, candidates, keys):
                self._drop_local(user_id)
        return len(events)

    def _drop_local(self, user_id: str) -> None:
        """Forget what this instance holds of a user whose record is gone already."""
        with self._write_lock, self._store_lock:
            salt = self._salts.pop(user_id, None)
            self._event_counts.pop(user_id, None)
            self.index.forget_user(user_id)
            self.stale.discard(user_id)
            if salt is not None:
                self.store.delete(self.collection, [_salted_point(user_id, salt)])

    def set_preferences(self, user_id: str, preferences: str | None, attributes: dict[str, Any],
                        now: float | None = None) -> None:
        now = time.time() if now is None else now
        check_id("user_id", user_id)
        preferences, attributes = parse_preferences(preferences, attributes)  # the API's rules for every caller
        with self._write_lock, self._store_lock:
            self.log.set_preferences(user_id, preferences, attributes, now)
            self.refresh([user_id], now=now)

    def forget(self, user_id: str) -> bool:
        """Remove the user's events, preferences, profile and co-occurrence entries."""
        existed = self.known(user_id)
        with self._write_lock, self._store_lock:
            point = self.point_id(user_id)
            self.log.forget_user(user_id)  # the salt goes with the events
            self._salts.pop(user_id, None)
            self._event_counts.pop(user_id, None)
            self.index.forget_user(user_id)
            if point is not None:
                self.store.delete(self.collection, [point])
            self.stale.discard(user_id)
        return existed

    def refresh(self, user_ids: list[str], now: float | None = None, durable: bool = True) -> None:
        """Recompute profile vectors from the log and write them (one batch)."""
        now = time.time() if now is None else now
        points, gone = [], []
        for start in range(0, len(user_ids), 256):
            self._refresh_some(user_ids[start:start + 256], now, points, gone)
        self.store.upsert(self.collection, points, durable=durable)
        self.store.delete(self.collection, gone, durable=durable)

    def _refresh_some(self, user_ids: list[str], now: float, points: list[StoredPoint], gone: list[str]) -> None:
        loaded = [(u, self.log.user_events(u, limit=self.config.max_events), self.log.preferences(u)) for u in user_ids]
        self.texts.warm([e.query for _, events, _ in loaded for e in events if e.item_id is None and e.query]
                        + [stated.preferences for _, _, stated in loaded if stated and stated.preferences])
        vectors = [(user_id, events, self.compute(events, stated, now)) for user_id, events, stated in loaded]
        salts = {user_id: self._salts.get(user_id) for user_id, _, vector in vectors if vector is not None}
        salts.update(self.log.profile_salts([u for u, salt in salts.items() if salt is None]))  # one durable write
        self._remember_salts(salts)
        for user_id, events, vector in vectors:
            if vector is None:
                point = self.point_id(user_id)
                if point is not None:
                    gone.append(point)
            else:
                payload = {"n_events": len(events), "updated": now}
                points.append(StoredPoint(_salted_point(user_id, salts[user_id]), payload, vector))

    # -- reads ----------------------------------------------------------------------------------

    def _profile_events(self, events: list[LoggedEvent], now: float,
                        extra_items: list[str] = ()) -> list[tuple[str | None, ProfileEvent]]:
        """(item id or None for a search, event) in profile order; ``extra_items`` are views now."""
        item_vectors = self.catalogue.vectors(list({e.item_id for e in events if e.item_id} | set(extra_items)))
        out = []
        for e in events:
            if e.item_id is not None:
                vector = item_vectors.get(e.item_id)
            elif e.query:
                vector = self.texts.get(e.query)
            else:
                vector = None
            if vector is not None:
                out.append((e.item_id, ProfileEvent(vector, e.type, e.timestamp, e.value)))
        for item_id in extra_items:
            if item_id in item_vectors:
                out.append((item_id, ProfileEvent(item_vectors[item_id], "view", now)))
        return out

    def item_weights(self, events: list[LoggedEvent], now: float | None = None,
                     extra_items: list[str] = ()) -> dict[str, tuple[float, np.ndarray]]:
        """Each item's share of the profile's positive mass (negative for dislikes), with its vector:
        the weights ``compute`` uses, for explanations."""
        now = time.time() if now is None else now
        pairs = self._profile_events(events, now, extra_items)
        weights = event_weights([e for _, e in pairs], now, self.config.half_life_days, self.config.position_decay)
        mass = sum(w for w in weights if w > 0) or 1.0
        out: dict[str, tuple[float, np.ndarray]] = {}
        for (item_id, event), w in zip(pairs, weights):
            if item_id is not None:
                out[item_id] = (out.get(item_id, (0.0, None))[0] + w / mass, event.vector)
        return out

    def compute(self, events: list[LoggedEvent], stated=None, now: float | None = None,
                extra_items: list[str] = ()) -> np.ndarray | None:
        """The profile vector for these events (oldest first), plus ``extra_items`` as views now."""
        now = time.time() if now is None else now
        profile_events = [e for _, e in self._profile_events(events, now, extra_items)]
        preference_vector = self.texts.get(stated.preferences) if stated and stated.preferences else None
        return aggregate_profile(
            profile_events, now, preference_vector,
            half_life_days=self.config.half_life_days,
            position_decay=self.config.position_decay,
            preference_prior=self.config.preference_prior,
        )

    def vector(self, user_id: str) -> np.ndarray | None:
        """The user's profile: the stored vector, or, while new events are not yet written into
        it, the same vector computed from the log."""
        if user_id in self.stale:
            events = self.log.user_events(user_id, limit=self.config.max_events)
            return self.compute(events, self.log.preferences(user_id))
        point = self.point_id(user_id)
        found = self.store.retrieve(self.collection, [point], with_vectors=True) if point is not None else []
        if found:
            return found[0].vector
        if self.compute_missing and point is not None:  # a salt: the user had a profile somewhere
            return self.compute(self.log.user_events(user_id, limit=self.config.max_events),
                                self.log.preferences(user_id))
        return None

    def known(self, user_id: str) -> bool:
        return bool(self.log.event_counts(user_id)) or self.log.preferences(user_id) is not None

    def summary(self, user_id: str, recent: int = 10, top: int = 5) -> dict[str, Any] | None:
        """What the service shows of a user: event counts, recent items and events, stated
        preferences, whether a profile exists, and what it leans to: the ``top`` categories (an
        item's most specific one) and brands of the profile's items, each with its share of their
        positive weight (recency and event type weigh as in the profile). None for an unknown user."""
        counts = self.log.event_counts(user_id)
        stated = self.log.preferences(user_id)
        if not counts and stated is None:
            return None
        events = self.log.user_events(user_id, limit=self.config.max_events)  # read once for all of it
        newest = events[::-1]
        recent_items: list[str] = []
        for e in newest:
            if e.item_id and e.item_id not in recent_items:
                recent_items.append(e.item_id)
            if len(recent_items) >= recent:
                break
        weights = {i: w for i, (w, _) in self.item_weights(events).items() if w > 0}
        payloads = {i: p.payload for i, p in self.catalogue.get_many(
            list(set(weights) | {e.item_id for e in newest[:recent] if e.item_id})).items()}
        known = {i: w for i, w in weights.items() if i in payloads}
        mass = sum(known.values()) or 1.0
        categories: dict[str, float] = {}
        brands: dict[str, float] = {}
        for item_id, w in known.items():
            p = payloads[item_id]
            if p.get("categories"):
                categories[p["categories"][-1]] = categories.get(p["categories"][-1], 0.0) + w / mass
            if p.get("brand"):
                brands[p["brand"]] = brands.get(p["brand"], 0.0) + w / mass

        def ranked(shares: dict[str, float]) -> list[dict[str, Any]]:
            best = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            return [{"name": name, "share": round(share, 4)} for name, share in best]

        return {
            "id": user_id,
            "event_counts": counts,
            "total_events": sum(counts.values()),
            "recent_items": recent_items,
            "preferences": stated.preferences if stated else None,
            "attributes": stated.attributes if stated else {},
            "has_profile": self.vector(user_id) is not None,
            "leaning": {"categories": ranked(categories), "brands": ranked(brands)},
            "recent_events": [{"type": e.type, "item_id": e.item_id, "at": e.timestamp, "query": e.query,
                               "title": payloads.get(e.item_id, {}).get("title") if e.item_id else None}
                              for e in newest[:recent]],
        }

    def rebuild(self, user_ids: list[str] | None = None, batch: int = 256, progress=None) -> int:
        """Recompute every profile from the log (after a crash, a reindex, or a config change)."""
        user_ids = self.log.user_ids() if user_ids is None else user_ids
        for start in range(0, len(user_ids), batch):
            chunk = user_ids[start:start + batch]
            self.refresh(chunk)
            if progress is not None:
                progress.update(len(chunk))
        return len(user_ids)
