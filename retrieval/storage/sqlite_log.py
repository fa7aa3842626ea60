"""The system of record in one SQLite file: the embedded default, for one process.

WAL mode with ``synchronous=FULL``: a commit that returned is on disk. Writes go through one
connection; reads use one connection per thread, so a reader never waits behind a writer's fsync.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.storage.event_log import SCHEMA_VERSION
from retrieval.storage.sql_log import EVENT_IDS, SqlEventLog

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


class UnusableFile(OSError):
    """A SQLite file that cannot be opened; the message names it and says what to check."""


def connect_file(path: Path) -> sqlite3.Connection:
    """An autocommit, write-ahead-logged connection to the SQLite file at ``path``, for any thread.
    A file that cannot be opened (a read-only folder, a full disk) is ``UnusableFile``, naming it."""
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn
    except sqlite3.OperationalError as err:
        raise UnusableFile(f"cannot open {path} ({err}): the data directory must be writable by this user, "
                           "on a disk with room") from None


class SqliteEventLog(SqlEventLog):
    """The ``EventLog`` interface in one SQLite file.

    Why: the embedded default, so one process runs with nothing else to install or start.

    Example::

        log = SqliteEventLog("data/events.sqlite3")
        log.append([parse_event({"user_id": "u1", "type": "click", "item_id": "sku-1"}, now)])
        log.user_events("u1")
    """

    NOW_EPOCH = "strftime('%s', 'now')"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect_file(self.path)
        self._conn.execute("PRAGMA synchronous=FULL")
        # Deleted rows are overwritten with zeros, so a forgotten user is not left in free pages.
        self._conn.execute("PRAGMA secure_delete=ON")
        self._lock = threading.Lock()
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older file to this version, in one transaction (a new version applies it itself)."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        with self._transaction() as cur:
            for statement in (_SCHEMA_V1.split(";") + (_SCHEMA_V2.split(";") if version < 2 else [])
                              + (EVENT_IDS.split(";") if version < 3 else [])):  # 3: event ids
                if statement.strip():
                    cur.execute(statement)
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        # Immediate: the write lock is taken at the start, so the transaction never fails to upgrade to it.
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        with self._lock:  # the writer's own connection: no write commits between these reads
            yield self._conn

    def _fetch_all(self, sql: str, args: tuple) -> list[tuple]:
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

    def forget_user(self, user_id: str) -> int:
        """Secure delete zeroes the freed space in the database file, and a truncating checkpoint
        moves the change out of the write-ahead log, so no copy of the rows stays on disk."""
        n = super().forget_user(user_id)
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._conn.close()
