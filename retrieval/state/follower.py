"""Following the shared log: an instance's derived state catches up with every other instance's writes.

Instances that share a system of record (PostgreSQL) each keep derived state in memory and in
their own vector index: co-occurrence, popularity, profiles, item vectors. Every instance applies
its own writes at once; ``LogFollower.catch_up`` applies what the others committed, by sequence
number, before every read, so any instance answers as if it had received every acknowledged write
itself (read-your-writes across instances).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from retrieval.state.catalogue import Catalogue
from retrieval.state.profiles import Profiles
from retrieval.storage.event_log import EventLog

log = logging.getLogger("hybridrec.follower")


class OwnWrites:
    """Numbers this instance wrote and applied itself: the follower skips them (an event applied
    twice would move the item in the user's co-occurrence sequence).

    Example::

        own = OwnWrites()
        own.add([7, 8]); own.take(7)   # True, and 7 is forgotten
    """

    def __init__(self) -> None:
        self._seqs: set[int] = set()
        self._lock = threading.Lock()

    def add(self, seqs: list[int]) -> None:
        with self._lock:
            self._seqs.update(seqs)

    def take(self, seq: int) -> bool:
        with self._lock:
            if seq in self._seqs:
                self._seqs.discard(seq)
                return True
            return False

    def forget_through(self, seq: int) -> None:
        with self._lock:
            self._seqs = {s for s in self._seqs if s > seq}


class LogFollower:
    """Applies what other instances committed after ``position``.

    Example::

        follower = LogFollower(log, lambda: engine.catalogue, lambda: engine.profiles, own, position=log.head())
        follower.catch_up()          # before answering a read: (changes applied, users forgotten)
        follower.position            # the last number applied
    """

    def __init__(self, log: EventLog, catalogue: Callable[[], Catalogue], profiles: Callable[[], Profiles],
                 own: OwnWrites, position: int, index_items: bool = True, batch: int = 5_000):
        self.log = log
        self._catalogue = catalogue
        self._profiles = profiles
        self.own = own
        self.position = position
        self.index_items = index_items  # False where the vector index is shared (a Qdrant server)
        self.batch = batch
        self._lock = threading.Lock()

    def lag(self) -> int:
        """Numbers committed that this instance has not applied (one read of the head)."""
        return max(0, self.log.head() - self.position)

    def catch_up(self) -> tuple[int, int]:
        """Apply everything committed up to now; returns how many changes were applied, and how
        many of them forgot a user."""
        target = self.log.head()
        if target <= self.position:
            return 0, 0
        applied = forgotten = 0
        with self._lock:  # a request that arrives meanwhile waits: it must see what came before it
            while self.position < target:
                changes = self.log.changes_after(self.position, limit=self.batch)
                if changes:
                    applied += self.apply(changes)
                    forgotten += len(changes.forgotten)
                self.position = max(self.position, changes.head)  # a page ends at its head; the loop reads on
                self.own.forget_through(self.position)
        return applied, forgotten

    def apply(self, changes) -> int:
        items = [c for c in changes.items if not self.own.take(c.seq)]
        if items:
            catalogue = self._catalogue()
            if self.index_items:
                catalogue.apply(items)
            else:
                catalogue.forget_cached(items)
        # Which events are this instance's own is asked under the profiles' write lock: a write
        # commits and says so under it, so none is taken in twice.
        events = self._profiles().follow(changes.events, changes.preferences, [key for _, key in changes.forgotten],
                                         own=self.own.take)
        return len(items) + events + len(changes.preferences) + len(changes.forgotten)
