"""The system of record in PostgreSQL: shared by every worker and instance of a deployment.

psycopg 3 with its connection pool. Every write is one transaction that takes its numbers from the
``head`` row; the row's lock makes writers commit in the order of their numbers, so a reader that
has seen number N has seen everything up to N, which is what lets instances follow the log by
position (``changes_after``). A commit returns after PostgreSQL has flushed it (the server's
``synchronous_commit``, on by default). The schema is created and migrated by whichever instance
starts first, under an advisory lock. Forgetting a user removes the rows' bytes from PostgreSQL's
files at the next vacuum (autovacuum), not at once; its write-ahead log keeps them as long as the
server's retention says.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from retrieval.storage.event_log import DatabaseUnavailable
from retrieval.storage.sql_log import EVENT_IDS, SqlEventLog

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
    2: EVENT_IDS,
}
_MIGRATION_LOCK = 0x68796272  # the advisory lock that serialises instances migrating at the same moment


class PostgresEventLog(SqlEventLog):
    """The ``EventLog`` interface in PostgreSQL.

    Why: one record shared by every worker and instance, which follow it by position.

    Example::

        log = PostgresEventLog("postgresql://hybridrec@db/hybridrec")
        log.append([parse_event({"user_id": "u1", "type": "click", "item_id": "sku-1"}, now)])
        log.changes_after(0).events        # what every instance follows
    """

    PLACEHOLDER = "%s"
    NOW_EPOCH = "extract(epoch FROM now())"
    MAX_IN_LIST = sys.maxsize  # ``_member_of`` binds one array, however long

    def __init__(self, url: str, pool_size: int = 8):
        self.url = url
        try:  # one plain connection first: its error says what is wrong, where the pool would only time out
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as err:
            raise DatabaseUnavailable.at(url, err) from None
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, name="hybridrec",
                                    timeout=30.0)
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

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection]:
        with self._pool.connection() as conn:
            # One snapshot for every read (the statement opens the connection's transaction).
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield conn
            finally:
                conn.rollback()

    def _fetch_all(self, sql: str, args: tuple) -> list[tuple]:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _member_of(self, values: Sequence[Any]) -> tuple[str, tuple]:
        return "= ANY(?)", (list(values),)

    def count(self, after: int = 0) -> int:
        """Events after ``after``; of the whole table, PostgreSQL's own estimate once it passes a
        million rows (an exact count reads every row, and ``/health`` asks on every call)."""
        if after:
            return super().count(after)
        estimate = self._one("SELECT reltuples::bigint FROM pg_class WHERE oid = 'events'::regclass")
        return estimate if estimate and estimate > 1_000_000 else self._one("SELECT COUNT(*) FROM events")

    def close(self) -> None:
        self._pool.close()
