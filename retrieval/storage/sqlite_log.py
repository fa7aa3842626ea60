"""The system of record in one SQLite file: the embedded default, for one process.

WAL mode with ``synchronous=FULL``: a commit that returned is on disk. Writes go through one
connection; reads use one connection per thread, so a reader never waits behind a writer's fsync.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retrieval.storage.event_log import (
    SCHEMA_VERSION,
    Changes,
    LoggedEvent,
    StatedPreferences,
    changes_from_rows,
    sparse_json,
    stored_item,
    vector_bytes,
)
from retrieval.storage.event_log import user_key as keyed_digest
from retrieval.storage.records import ParsedEvent
from retrieval.storage.vector_store import StoredPoint

_SCHEMA_V1 = """
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

# Version 2: every write takes numbers from one sequence (``head``), items are kept here with their
# vectors, and forgetting leaves a tombstone.
_SCHEMA_V2 = """
ALTER TABLE users ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX users_seq ON users (seq);
CREATE TABLE head (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);
INSERT INTO head VALUES (1, (SELECT COALESCE(MAX(seq), 0) FROM events));
CREATE TABLE items (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    payload TEXT,
    vector BLOB,
    sparse TEXT,
    seq INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX items_seq ON items (seq);
CREATE TABLE forgotten (seq INTEGER PRIMARY KEY, user_key TEXT NOT NULL, ts REAL NOT NULL);
"""


class SqliteEventLog:
    """The ``EventLog`` interface in one SQLite file.

    Example::

        log = SqliteEventLog("data/events.sqlite3")
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
        self._migrate()
        self._lock = threading.Lock()
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._secret: bytes | None = None

    def _migrate(self) -> None:
        """Bring an older file to this version, in one transaction (a new version applies it itself)."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA_V1.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            if version < 2:
                for statement in _SCHEMA_V2.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _write(self, work):
        """Run ``work(cursor, take)`` in one immediate transaction; ``take(n)`` reserves the next
        ``n`` numbers of the change sequence and returns the first."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                def take(n: int) -> int:
                    (last,) = cur.execute("UPDATE head SET seq = seq + ? RETURNING seq", (n,)).fetchone()
                    return last - n + 1
                result = work(cur, take)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return result

    def append(self, events: list[ParsedEvent]) -> list[int]:
        if not events:
            return []

        def work(cur, take):
            first = take(len(events))
            cur.executemany(
                "INSERT INTO events (seq, user_id, item_id, type, value, query, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(first + i, e.user_id, e.item_id, e.type, e.value, e.query, e.timestamp) for i, e in enumerate(events)])
            return list(range(first, first + len(events)))
        return self._write(work)

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
        sql = "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE user_id = ? ORDER BY seq DESC"
        rows = self._rows(sql + (" LIMIT ?" if limit else ""), (user_id, limit) if limit else (user_id,))
        return [LoggedEvent(*row) for row in reversed(rows)]

    def user_item_ids(self, user_id: str, types: tuple[str, ...] | None = None) -> set[str]:
        sql = "SELECT DISTINCT item_id FROM events WHERE user_id = ? AND item_id IS NOT NULL"
        if types:
            sql += f" AND type IN ({', '.join('?' * len(types))})"
        return {r[0] for r in self._rows(sql, (user_id, *(types or ())))}

    def event_counts(self, user_id: str) -> dict[str, int]:
        return dict(self._rows("SELECT type, COUNT(*) FROM events WHERE user_id = ? GROUP BY type", (user_id,)))

    def iter_events(self, batch: int = 10_000, after: int = 0) -> Iterator[LoggedEvent]:
        last = after
        while True:
            rows = self._rows(
                "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch))
            if not rows:
                return
            for row in rows:
                yield LoggedEvent(*row)
            last = rows[-1][0]

    def count(self, after: int = 0) -> int:
        return self._rows("SELECT COUNT(*) FROM events WHERE seq > ?", (after,))[0][0]

    def user_ids(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT user_id FROM events UNION SELECT user_id FROM users")]

    def set_preferences(self, user_id: str, preferences: str | None, attributes: dict[str, Any], now: float) -> None:
        def work(cur, take):
            cur.execute(
                "INSERT INTO users (user_id, preferences, attributes, updated, seq) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET preferences = excluded.preferences, "
                "attributes = excluded.attributes, updated = excluded.updated, seq = excluded.seq",
                (user_id, preferences, json.dumps(attributes), now, take(1)))
        self._write(work)

    def preferences(self, user_id: str) -> StatedPreferences | None:
        rows = self._rows("SELECT user_id, preferences, attributes, updated FROM users WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        uid, prefs, attrs, updated = rows[0]
        return StatedPreferences(uid, prefs, json.loads(attrs), updated)

    def forget_user(self, user_id: str) -> int:
        """Secure delete zeroes the freed space in the database file, and a truncating checkpoint
        moves the change out of the write-ahead log, so no copy of the rows stays on disk."""
        key = self.user_key(user_id)

        def work(cur, take):
            n = cur.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            known = cur.execute("DELETE FROM users WHERE user_id = ?", (user_id,)).rowcount
            cur.execute("DELETE FROM profile_keys WHERE user_id = ?", (user_id,))
            if n or known:
                cur.execute("INSERT INTO forgotten (seq, user_key, ts) VALUES (?, ?, strftime('%s', 'now'))",
                            (take(1), key))
            return n
        n = self._write(work)
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def user_key(self, user_id: str) -> str:
        if self._secret is None:
            secret = self.get_meta("user_key_secret")
            if secret is None:
                self._write(lambda cur, take: cur.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('user_key_secret', ?)", (os.urandom(32).hex(),)))
                secret = self.get_meta("user_key_secret")
            self._secret = bytes.fromhex(secret)
        return keyed_digest(self._secret, user_id)

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

        def work(cur, take):
            salts: dict[str, bytes] = {}
            cur.executemany("INSERT OR IGNORE INTO profile_keys (user_id, salt) VALUES (?, ?)",
                            [(user_id, os.urandom(16)) for user_id in user_ids])
            for start in range(0, len(user_ids), 500):
                chunk = user_ids[start:start + 500]
                salts.update(cur.execute("SELECT user_id, salt FROM profile_keys WHERE user_id IN "
                                         f"({','.join('?' * len(chunk))})", chunk).fetchall())
            return salts
        return self._write(work)

    def first_seq(self, user_id: str) -> int | None:
        return self._rows("SELECT MIN(seq) FROM events WHERE user_id = ?", (user_id,))[0][0]

    def max_seq(self) -> int:
        return self._rows("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    def head(self) -> int:
        return self._rows("SELECT seq FROM head")[0][0]

    def users_after(self, seq: int) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT user_id FROM events WHERE seq > ?", (seq,))]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value))

    def put_items(self, collection: str, points: list[StoredPoint]) -> list[int]:
        if not points:
            return []

        def work(cur, take):
            first = take(len(points))
            cur.executemany(
                "INSERT INTO items (collection, id, payload, vector, sparse, seq) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(collection, id) DO UPDATE SET payload = excluded.payload, vector = excluded.vector, "
                "sparse = excluded.sparse, seq = excluded.seq",
                [(collection, p.id, json.dumps(p.payload), vector_bytes(p.vector), sparse_json(p.sparse), first + i)
                 for i, p in enumerate(points)])
            return list(range(first, first + len(points)))
        return self._write(work)

    def delete_items(self, collection: str, ids: list[str]) -> list[int]:
        if not ids:
            return []

        def work(cur, take):
            first = take(len(ids))
            # A deleted item stays as a row without payload, so other instances learn of the delete.
            cur.executemany(
                "INSERT INTO items (collection, id, seq) VALUES (?, ?, ?) ON CONFLICT(collection, id) DO UPDATE "
                "SET payload = NULL, vector = NULL, sparse = NULL, seq = excluded.seq",
                [(collection, item_id, first + i) for i, item_id in enumerate(ids)])
            return list(range(first, first + len(ids)))
        return self._write(work)

    def drop_items(self, collection: str) -> None:
        """Remove a collection's rows (a replaced layout's, after a reindex)."""
        self._write(lambda cur, take: cur.execute("DELETE FROM items WHERE collection = ?", (collection,)))

    def stored_items(self, collection: str, batch: int = 512) -> Iterator[list[StoredPoint]]:
        last = ""
        while True:
            rows = self._rows("SELECT id, payload, vector, sparse FROM items WHERE collection = ? AND id > ? "
                              "AND payload IS NOT NULL ORDER BY id LIMIT ?", (collection, last, batch))
            if not rows:
                return
            yield [stored_item(*row) for row in rows]
            last = rows[-1][0]

    def changes_after(self, seq: int, limit: int = 10_000) -> Changes:
        with self._lock:  # one consistent cut: no write commits between these reads
            head = self._conn.execute("SELECT seq FROM head").fetchone()[0]
            events = self._conn.execute(
                "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?", (seq, head, limit)).fetchall()
            if len(events) == limit:
                head = events[-1][0]  # the rest next time; the other kinds stop at the same number
            users = self._conn.execute("SELECT seq, user_id FROM users WHERE seq > ? AND seq <= ? ORDER BY seq",
                                       (seq, head)).fetchall()
            items = self._conn.execute(
                "SELECT seq, collection, id, payload, vector, sparse FROM items WHERE seq > ? AND seq <= ? ORDER BY seq",
                (seq, head)).fetchall()
            forgotten = self._conn.execute(
                "SELECT seq, user_key FROM forgotten WHERE seq > ? AND seq <= ? ORDER BY seq", (seq, head)).fetchall()
        return changes_from_rows(head, events, users, items, forgotten)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._conn.close()
