"""The system of record in PostgreSQL: shared by every worker and instance of a deployment.

psycopg 3 with its connection pool. Every write is one transaction that takes its numbers from the
``head`` row; the row's lock makes writers commit in the order of their numbers, so a reader that
has seen number N has seen everything up to N, which is what lets instances follow the log by
position (``changes_after``). A commit returns after PostgreSQL has flushed it (the server's
``synchronous_commit``, on by default). The schema is created and migrated by whichever instance
starts first, under an advisory lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from retrieval.storage.event_log import (
    Changes,
    DatabaseUnavailable,
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

# Each entry is applied once, in order, in its own transaction; a new version only appends.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT,
    type TEXT NOT NULL,
    value DOUBLE PRECISION,
    query TEXT,
    ts DOUBLE PRECISION NOT NULL
);
CREATE INDEX events_user ON events (user_id, seq);
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    preferences TEXT,
    attributes TEXT NOT NULL DEFAULT '{}',
    updated DOUBLE PRECISION NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX users_seq ON users (seq);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE profile_keys (user_id TEXT PRIMARY KEY, salt BYTEA NOT NULL);
CREATE TABLE head (one INTEGER PRIMARY KEY CHECK (one = 1), seq BIGINT NOT NULL);
INSERT INTO head VALUES (1, 0);
CREATE TABLE items (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    payload TEXT,
    vector BYTEA,
    sparse TEXT,
    seq BIGINT NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX items_seq ON items (seq);
CREATE TABLE forgotten (seq BIGINT PRIMARY KEY, user_key TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL);
""",
}
_MIGRATION_LOCK = 0x68796272  # the advisory lock that serialises instances migrating at the same moment


class PostgresEventLog:
    """The ``EventLog`` interface in PostgreSQL.

    Example::

        log = PostgresEventLog("postgresql://hybridrec@db/hybridrec")
        log.append([parse_event({"user_id": "u1", "type": "click", "item_id": "sku-1"}, now)])
        log.changes_after(0).events        # what every instance follows
    """

    def __init__(self, url: str, pool_size: int = 8):
        self.url = url
        try:  # one plain connection first: its error says what is wrong, where the pool would only time out
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as err:
            raise DatabaseUnavailable.at(url, err) from None
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, name="hybridrec",
                                    timeout=30.0)
        self._secret: bytes | None = None
        self._migrate()

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version in sorted(MIGRATIONS):
                if version not in applied:
                    conn.execute(MIGRATIONS[version])
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    def schema_version(self) -> int:
        return self._one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")

    def _write(self, work):
        """Run ``work(conn, take)`` in one transaction; ``take(n)`` reserves the next ``n`` numbers
        of the change sequence (holding the head row until commit) and returns the first."""
        with self._pool.connection() as conn, conn.transaction():
            def take(n: int) -> int:
                (last,) = conn.execute("UPDATE head SET seq = seq + %s WHERE one = 1 RETURNING seq", (n,)).fetchone()
                return last - n + 1
            return work(conn, take)

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple = ()):
        rows = self._all(sql, args)
        return rows[0][0] if rows else None

    def append(self, events: list[ParsedEvent]) -> list[int]:
        if not events:
            return []

        def work(conn, take):
            first = take(len(events))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO events (seq, user_id, item_id, type, value, query, ts) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(first + i, e.user_id, e.item_id, e.type, e.value, e.query, e.timestamp)
                     for i, e in enumerate(events)])
            return list(range(first, first + len(events)))
        return self._write(work)

    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        sql = "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE user_id = %s ORDER BY seq DESC"
        rows = self._all(sql + (" LIMIT %s" if limit else ""), (user_id, limit) if limit else (user_id,))
        return [LoggedEvent(*row) for row in reversed(rows)]

    def user_item_ids(self, user_id: str, types: tuple[str, ...] | None = None) -> set[str]:
        sql = "SELECT DISTINCT item_id FROM events WHERE user_id = %s AND item_id IS NOT NULL"
        args: tuple = (user_id,)
        if types:
            sql += " AND type = ANY(%s)"
            args = (user_id, list(types))
        return {r[0] for r in self._all(sql, args)}

    def event_counts(self, user_id: str) -> dict[str, int]:
        return dict(self._all("SELECT type, COUNT(*) FROM events WHERE user_id = %s GROUP BY type", (user_id,)))

    def iter_events(self, batch: int = 10_000, after: int = 0) -> Iterator[LoggedEvent]:
        last = after
        while True:
            rows = self._all("SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE seq > %s "
                             "ORDER BY seq LIMIT %s", (last, batch))
            if not rows:
                return
            for row in rows:
                yield LoggedEvent(*row)
            last = rows[-1][0]

    def count(self, after: int = 0) -> int:
        """Events after ``after``; of the whole table, PostgreSQL's own estimate once it passes a
        million rows (an exact count reads every row, and ``/health`` asks on every call)."""
        if after:
            return self._one("SELECT COUNT(*) FROM events WHERE seq > %s", (after,))
        estimate = self._one("SELECT reltuples::bigint FROM pg_class WHERE oid = 'events'::regclass")
        return estimate if estimate and estimate > 1_000_000 else self._one("SELECT COUNT(*) FROM events")

    def user_ids(self) -> list[str]:
        return [r[0] for r in self._all("SELECT user_id FROM events UNION SELECT user_id FROM users")]

    def set_preferences(self, user_id: str, preferences: str | None, attributes: dict[str, Any], now: float) -> None:
        def work(conn, take):
            conn.execute(
                "INSERT INTO users (user_id, preferences, attributes, updated, seq) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (user_id) DO UPDATE SET preferences = excluded.preferences, "
                "attributes = excluded.attributes, updated = excluded.updated, seq = excluded.seq",
                (user_id, preferences, json.dumps(attributes), now, take(1)))
        self._write(work)

    def preferences(self, user_id: str) -> StatedPreferences | None:
        rows = self._all("SELECT user_id, preferences, attributes, updated FROM users WHERE user_id = %s", (user_id,))
        if not rows:
            return None
        uid, prefs, attrs, updated = rows[0]
        return StatedPreferences(uid, prefs, json.loads(attrs), updated)

    def forget_user(self, user_id: str) -> int:
        """PostgreSQL removes the rows' bytes from its files at the next vacuum (autovacuum), not at
        once; its write-ahead log keeps them as long as the server's retention says."""
        key = self.user_key(user_id)

        def work(conn, take):
            n = conn.execute("DELETE FROM events WHERE user_id = %s", (user_id,)).rowcount
            known = conn.execute("DELETE FROM users WHERE user_id = %s", (user_id,)).rowcount
            conn.execute("DELETE FROM profile_keys WHERE user_id = %s", (user_id,))
            if n or known:
                conn.execute("INSERT INTO forgotten (seq, user_key, ts) VALUES (%s, %s, extract(epoch FROM now()))",
                             (take(1), key))
            return n
        return self._write(work)

    def user_key(self, user_id: str) -> str:
        if self._secret is None:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("INSERT INTO meta (key, value) VALUES ('user_key_secret', %s) ON CONFLICT DO NOTHING",
                             (os.urandom(32).hex(),))
                (secret,) = conn.execute("SELECT value FROM meta WHERE key = 'user_key_secret'").fetchone()
            self._secret = bytes.fromhex(secret)
        return keyed_digest(self._secret, user_id)

    def profile_salt(self, user_id: str) -> bytes | None:
        salt = self._one("SELECT salt FROM profile_keys WHERE user_id = %s", (user_id,))
        return bytes(salt) if salt is not None else None

    def profile_salts(self, user_ids: list[str]) -> dict[str, bytes]:
        if not user_ids:
            return {}
        with self._pool.connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO profile_keys (user_id, salt) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                [(user_id, os.urandom(16)) for user_id in user_ids])
            rows = conn.execute("SELECT user_id, salt FROM profile_keys WHERE user_id = ANY(%s)",
                                (list(user_ids),)).fetchall()
        return {user_id: bytes(salt) for user_id, salt in rows}

    def first_seq(self, user_id: str) -> int | None:
        return self._one("SELECT MIN(seq) FROM events WHERE user_id = %s", (user_id,))

    def max_seq(self) -> int:
        return self._one("SELECT COALESCE(MAX(seq), 0) FROM events")

    def head(self) -> int:
        return self._one("SELECT seq FROM head")

    def users_after(self, seq: int) -> list[str]:
        return [r[0] for r in self._all("SELECT DISTINCT user_id FROM events WHERE seq > %s", (seq,))]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        value = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return default if value is None else value

    def set_meta(self, key: str, value: str) -> None:
        with self._pool.connection() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (%s, %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def put_items(self, collection: str, points: list[StoredPoint]) -> list[int]:
        if not points:
            return []

        def work(conn, take):
            first = take(len(points))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO items (collection, id, payload, vector, sparse, seq) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (collection, id) DO UPDATE SET payload = excluded.payload, "
                    "vector = excluded.vector, sparse = excluded.sparse, seq = excluded.seq",
                    [(collection, p.id, json.dumps(p.payload), vector_bytes(p.vector), sparse_json(p.sparse), first + i)
                     for i, p in enumerate(points)])
            return list(range(first, first + len(points)))
        return self._write(work)

    def delete_items(self, collection: str, ids: list[str]) -> list[int]:
        if not ids:
            return []

        def work(conn, take):
            first = take(len(ids))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO items (collection, id, seq) VALUES (%s, %s, %s) ON CONFLICT (collection, id) "
                    "DO UPDATE SET payload = NULL, vector = NULL, sparse = NULL, seq = excluded.seq",
                    [(collection, item_id, first + i) for i, item_id in enumerate(ids)])
            return list(range(first, first + len(ids)))
        return self._write(work)

    def drop_items(self, collection: str) -> None:
        """Remove a collection's rows (a replaced layout's, after a reindex)."""
        self._write(lambda cur, take: cur.execute("DELETE FROM items WHERE collection = %s", (collection,)))

    def stored_items(self, collection: str, batch: int = 512) -> Iterator[list[StoredPoint]]:
        last = ""
        while True:
            rows = self._all("SELECT id, payload, vector, sparse FROM items WHERE collection = %s AND id > %s "
                             "AND payload IS NOT NULL ORDER BY id LIMIT %s", (collection, last, batch))
            if not rows:
                return
            yield [stored_item(*row) for row in rows]
            last = rows[-1][0]

    def changes_after(self, seq: int, limit: int = 10_000) -> Changes:
        with self._pool.connection() as conn:
            # One snapshot for every read (the statement opens the connection's transaction).
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                (head,) = conn.execute("SELECT seq FROM head").fetchone()
                events = conn.execute(
                    "SELECT seq, user_id, item_id, type, value, query, ts FROM events WHERE seq > %s AND seq <= %s "
                    "ORDER BY seq LIMIT %s", (seq, head, limit)).fetchall()
                if len(events) == limit:
                    head = events[-1][0]  # the rest next time; the other kinds stop at the same number
                users = conn.execute("SELECT seq, user_id FROM users WHERE seq > %s AND seq <= %s ORDER BY seq",
                                     (seq, head)).fetchall()
                items = conn.execute("SELECT seq, collection, id, payload, vector, sparse FROM items "
                                     "WHERE seq > %s AND seq <= %s ORDER BY seq", (seq, head)).fetchall()
                forgotten = conn.execute("SELECT seq, user_key FROM forgotten WHERE seq > %s AND seq <= %s "
                                         "ORDER BY seq", (seq, head)).fetchall()
            finally:
                conn.rollback()
        return changes_from_rows(head, events, users, items, forgotten)

    def close(self) -> None:
        self._pool.close()
