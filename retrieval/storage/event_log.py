"""The event log: every accepted event, durable before the API acknowledges it.

SQLite in WAL mode with ``synchronous=FULL``: a commit that returned is on disk. Profiles, the
co-occurrence index and popularity are all derived from this log and can be rebuilt from it.
Stated user preferences live here too, so forgetting a user is one transaction. Writes go through
one connection; reads use one connection per thread, so a reader never waits behind a writer's fsync.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.storage.records import ParsedEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT,
    type TEXT NOT NULL,
    value REAL,
    query TEXT,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    preferences TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profile_keys (user_id TEXT PRIMARY KEY, salt BLOB NOT NULL);
"""


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    user_id: str
    item_id: str | None
    type: str
    value: float | None
    query: str | None
    timestamp: float


@dataclass(frozen=True)
class StatedPreferences:
    user_id: str
    preferences: str | None
    attributes: dict[str, Any]
    updated: float


class EventLog:
    """Append-only (except for forgetting) log of user events in one SQLite file.

    Example::

        log = EventLog("data/events.sqlite3")
        log.append([parse_event({"user_id": "u1", "type": "click", "item_id": "sku-1"}, now)])
        log.user_events("u1")
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        # Deleted rows are overwritten with zeros, so a forgotten user is not left in free pages.
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False

    def append(self, events: list[ParsedEvent]) -> list[int]:
        """Commit events in one transaction; returns their sequence numbers."""
        if not events:
            return []
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                seqs = []
                for e in events:
                    cur.execute(
                        "INSERT INTO events (user_id, item_id, type, value, query, ts) VALUES (?, ?, ?, ?, ?, ?)",
                        (e.user_id, e.item_id, e.type, e.value, e.query, e.timestamp),
                    )
                    seqs.append(cur.lastrowid)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return seqs

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Run a read on an idle reader connection (opened when none is idle, kept for reuse)."""
        try:
            conn = self._idle_readers.get_nowait()
        except queue.Empty:
            with self._lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("the event log is closed") from None
                conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA query_only=ON")
                self._readers.append(conn)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            self._idle_readers.put(conn)

    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        """The user's most recent events (all of them without ``limit``), oldest first."""
        sql = "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE user_id = ? ORDER BY seq DESC"
        rows = self._rows(sql + (" LIMIT ?" if limit else ""), (user_id, limit) if limit else (user_id,))
        return [LoggedEvent(*row) for row in reversed(rows)]

    def user_item_ids(self, user_id: str, types: tuple[str, ...] | None = None) -> set[str]:
        """Items the user had any event about, or only events of ``types``."""
        sql = "SELECT DISTINCT item_id FROM events WHERE user_id = ? AND item_id IS NOT NULL"
        if types:
            sql += f" AND type IN ({', '.join('?' * len(types))})"
        return {r[0] for r in self._rows(sql, (user_id, *(types or ())))}

    def event_counts(self, user_id: str) -> dict[str, int]:
        rows = self._rows("SELECT type, COUNT(*) FROM events WHERE user_id = ? GROUP BY type", (user_id,))
        return dict(rows)

    def iter_events(self, batch: int = 10_000) -> Iterator[LoggedEvent]:
        """Every event in log order, read in pages so a large log never sits in memory."""
        last = 0
        while True:
            rows = self._rows(
                "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            for row in rows:
                yield LoggedEvent(*row)
            last = rows[-1][0]

    def count(self) -> int:
        return self._rows("SELECT COUNT(*) FROM events")[0][0]

    def user_ids(self) -> list[str]:
        rows = self._rows("SELECT user_id FROM events UNION SELECT user_id FROM users")
        return [r[0] for r in rows]

    def set_preferences(self, user_id: str, preferences: str | None, attributes: dict[str, Any], now: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO users (user_id, preferences, attributes, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET preferences = excluded.preferences, "
                "attributes = excluded.attributes, updated = excluded.updated",
                (user_id, preferences, json.dumps(attributes), now),
            )

    def preferences(self, user_id: str) -> StatedPreferences | None:
        rows = self._rows("SELECT user_id, preferences, attributes, updated FROM users WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        uid, prefs, attrs, updated = rows[0]
        return StatedPreferences(uid, prefs, json.loads(attrs), updated)

    def forget_user(self, user_id: str) -> int:
        """Delete every event and the stated preferences of a user; returns how many events went.

        Secure delete zeroes the freed space in the database file, and a truncating checkpoint
        moves the change out of the write-ahead log, so no copy of the rows stays on disk."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                n = cur.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
                cur.execute("DELETE FROM users WHERE user_id = ?", (user_id,))
                cur.execute("DELETE FROM profile_keys WHERE user_id = ?", (user_id,))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def profile_salt(self, user_id: str) -> bytes | None:
        """The user's random salt, which names their profile in the vector store (see
        ``Profiles.point_id``); None before ``profile_salts`` made one. Forgetting deletes it."""
        rows = self._rows("SELECT salt FROM profile_keys WHERE user_id = ?", (user_id,))
        return rows[0][0] if rows else None

    def profile_salts(self, user_ids: list[str]) -> dict[str, bytes]:
        """The salts of several users, made in one transaction for those without one: a refresh
        of many new users' profiles is one durable write, not one per user."""
        if not user_ids:
            return {}
        salts: dict[str, bytes] = {}
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany("INSERT OR IGNORE INTO profile_keys (user_id, salt) VALUES (?, ?)",
                                [(user_id, os.urandom(16)) for user_id in user_ids])
                for start in range(0, len(user_ids), 500):
                    chunk = user_ids[start:start + 500]
                    salts.update(cur.execute("SELECT user_id, salt FROM profile_keys WHERE user_id IN "
                                             f"({','.join('?' * len(chunk))})", chunk).fetchall())
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return salts

    def first_seq(self, user_id: str) -> int | None:
        """The sequence number of the user's oldest logged event, or None without events."""
        return self._rows("SELECT MIN(seq) FROM events WHERE user_id = ?", (user_id,))[0][0]

    def max_seq(self) -> int:
        return self._rows("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    def users_after(self, seq: int) -> list[str]:
        """Users with events newer than ``seq`` (for repairing profiles after a crash)."""
        return [r[0] for r in self._rows("SELECT DISTINCT user_id FROM events WHERE seq > ?", (seq,))]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._conn.close()
