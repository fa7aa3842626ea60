"""The system of record: what the service must not lose, behind one interface, two back-ends.

Every accepted event, the users' stated preferences, the items (fields and vectors) and the
tombstones of forgotten users. Every write takes the next numbers of one sequence, in commit
order, so an instance follows everything written by any instance by asking for what came after
the last number it applied (``changes_after``). Vector indexes, co-occurrence, popularity and
profiles are derived from it and can be rebuilt from it.

- ``SqliteEventLog`` (``retrieval/storage/sqlite_log.py``): one file in the data directory, the
  embedded default for one process.
- ``PostgresEventLog`` (``retrieval/storage/postgres_log.py``): PostgreSQL, shared by any number of
  workers and instances (``HYBRIDREC_DATABASE_URL``).

Both pass the same contract suite (``tests/retrieval/test_event_log_contract.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval.storage.files import write_atomically
from retrieval.storage.records import ParsedEvent
from retrieval.storage.vector_store import SparseVector, StoredPoint

SCHEMA_VERSION = 3  # 1: events, users, meta, profile keys; 2: one change sequence, items, tombstones; 3: event ids


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


@dataclass(frozen=True)
class ItemChange:
    """An item written (``point``) or deleted (``point`` None) in a collection, at ``seq``."""

    seq: int
    collection: str
    id: str
    point: StoredPoint | None


@dataclass
class Changes:
    """What the log received after a position, up to ``head`` (every number up to it is
    committed): events, users whose stated preferences changed, item writes and deletes, and
    forgotten users (as ``user_key`` digests, never their ids)."""

    head: int
    events: list[LoggedEvent] = field(default_factory=list)
    preferences: list[tuple[int, str]] = field(default_factory=list)
    items: list[ItemChange] = field(default_factory=list)
    forgotten: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.preferences or self.items or self.forgotten)


class DatabaseUnavailable(RuntimeError):
    """The system of record cannot be reached or refuses the connection; the message says where and why."""

    @classmethod
    def at(cls, url: str, err: Exception) -> "DatabaseUnavailable":
        return cls(f"cannot use the PostgreSQL database at {database_where(url)}: {without_secrets(str(err), url)}; "
                   "check HYBRIDREC_DATABASE_URL and that the server is running")


def _conninfo(url: str) -> dict[str, Any] | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url)
    except Exception:  # not a connection string psycopg reads: nothing of it may be shown
        return None


def database_where(url: str) -> str:
    """Where a database URL points, to print: ``host:port/dbname``, never the user's password."""
    parts = _conninfo(url)
    if parts is None:
        return "(a connection string that cannot be read)"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or parts.get('user') or ''}"


def without_secrets(message: str, url: str) -> str:
    """``message`` (a driver's error, which may repeat the connection string) without the URL or its
    password. Of a URL that cannot be read, the driver's words may quote any part, the password
    included: they are not repeated."""
    parts = _conninfo(url)
    if parts is None:
        return ("the connection string cannot be read; a password with '%', spaces or '@' in it must be "
                "percent-encoded (postgresql://user:p%40ss@host/db)")
    message = message.strip().replace(url, database_where(url))
    password = parts.get("password")
    return message.replace(password, "***") if password else message


RECORD_FILE = "record.json"  # which system of record a data directory uses, once it is a database


def note_record(database_url: str, data_dir: str | Path) -> None:
    """Say in the data directory's ``record.json`` that its record is this database: once a
    connection to it has worked (a mistyped URL must not mark the directory)."""
    path = Path(data_dir) / RECORD_FILE
    known = {"database": "postgresql", "at": database_where(database_url)}
    try:
        if json.loads(path.read_text(encoding="utf-8")) == known:
            return
    except (OSError, ValueError):
        pass
    write_atomically(path, lambda fh: fh.write(json.dumps(known).encode()))


def check_record(database_url: str | None, data_dir: str | Path) -> None:
    """A data directory whose record is a database (``note_record``) is refused without
    ``database_url``, instead of starting an empty SQLite log beside it (where a forget would find
    nothing to forget, and a key made would never reach the service)."""
    if database_url:
        return
    path = Path(data_dir) / RECORD_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # none yet; or no folder, which opening it will say
        return
    except (OSError, ValueError) as err:
        known = err
    if not isinstance(known, dict):
        raise DatabaseUnavailable(f"{path} cannot be read ({known}): it says which database this data directory "
                                  "uses; set HYBRIDREC_DATABASE_URL to it, or remove the file if it uses none")
    if known.get("database") == "postgresql":
        raise DatabaseUnavailable(
            f"data directory {data_dir} keeps its events, users and keys in the PostgreSQL database at "
            f"{known.get('at')} (its {RECORD_FILE} says so): set HYBRIDREC_DATABASE_URL to that database; without it "
            "this command would read and write an empty log of its own")


class EventLog(Protocol):
    """The storage interface. Every write is one transaction, committed before it returns."""

    def append(self, events: list[ParsedEvent]) -> list[int | None]:
        """Commit events in one transaction; returns their sequence numbers, in order, None for an
        event whose ``event_id`` the user has logged already (it is not logged again)."""
    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        """The user's most recent events (all without ``limit``), oldest first."""
    def user_item_ids(self, user_id: str, types: tuple[str, ...] | None = None) -> set[str]: ...
    def event_counts(self, user_id: str) -> dict[str, int]: ...
    def iter_events(self, batch: int = 10_000, after: int = 0) -> Iterator[LoggedEvent]:
        """Every event after ``after`` in log order, read in pages."""
    def count(self, after: int = 0) -> int:
        """How many events came after ``after`` (all of them by default)."""
    def user_ids(self) -> list[str]: ...
    def set_preferences(self, user_id: str, preferences: str | None, attributes: dict[str, Any],
                        now: float) -> None: ...
    def preferences(self, user_id: str) -> StatedPreferences | None: ...
    def forget_user(self, user_id: str) -> int:
        """Delete the user's events, preferences and profile salt, and leave a tombstone (a keyed
        digest of the id) for other instances; returns how many events went."""
    def profile_salt(self, user_id: str) -> bytes | None: ...
    def profile_salts(self, user_ids: list[str]) -> dict[str, bytes]: ...
    def first_seq(self, user_id: str) -> int | None: ...
    def max_seq(self) -> int:
        """The newest event's sequence number (0 without events)."""
    def head(self) -> int:
        """The newest sequence number of any change."""
    def users_after(self, seq: int) -> list[str]:
        """Users with an event or a change of stated preferences numbered after ``seq``."""
    def get_meta(self, key: str, default: str | None = None) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def put_items(self, collection: str, points: list[StoredPoint]) -> list[int]:
        """Store items' payloads and vectors (the index is rebuilt from these); their numbers."""
    def delete_items(self, collection: str, ids: list[str]) -> list[int]: ...
    def drop_items(self, collection: str) -> None:
        """Remove a collection's rows (a replaced layout's, after a reindex)."""
    def item_collections(self) -> list[str]:
        """The collections that have item rows."""
    def forgotten_keys(self) -> set[str]:
        """The digests (``user_key``) of every user ever forgotten."""
    def stored_items(self, collection: str, batch: int = 512) -> Iterator[list[StoredPoint]]:
        """Every live item of a collection with its vectors, in pages."""
    def items_now(self, collection: str, ids: list[str]) -> dict[str, StoredPoint | None]:
        """Each item as the record holds it now (None: deleted or never written)."""
    def changes_after(self, seq: int, limit: int = 10_000) -> Changes:
        """What was committed after ``seq``: at most about ``limit`` rows of each kind."""
    def user_key(self, user_id: str) -> str:
        """The digest a tombstone names a user by (keyed by this database's own secret)."""
    def close(self) -> None: ...


def keyed_users(log: EventLog, user_ids, keys: set[str]) -> list[str]:
    """Which of ``user_ids`` the tombstone digests ``keys`` name (forgetting never stores the id)."""
    return [u for u in user_ids if log.user_key(u) in keys]


def user_key(secret: bytes, user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), key=secret, digest_size=16).hexdigest()


def vector_bytes(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=np.float32).tobytes()


def sparse_json(sparse: SparseVector | None) -> str | None:
    return None if sparse is None else json.dumps([sparse.indices, sparse.values])


def stored_item(item_id: str, payload: str, vector: bytes | None, sparse: str | None) -> StoredPoint:
    indices_values = json.loads(sparse) if sparse else None
    return StoredPoint(
        item_id, json.loads(payload),
        np.frombuffer(bytes(vector), dtype=np.float32).copy() if vector is not None else None,
        SparseVector(*indices_values) if indices_values else None)


def changes_from_rows(head: int, events: list, preferences: list, items: list, forgotten: list) -> Changes:
    """``Changes`` from the rows both back-ends read (the same columns, in the same order)."""
    return Changes(
        head, [LoggedEvent(*row) for row in events], [tuple(row) for row in preferences],
        [ItemChange(seq, collection, item_id, stored_item(item_id, payload, vector, sparse) if payload is not None
                    else None) for seq, collection, item_id, payload, vector, sparse in items],
        [tuple(row) for row in forgotten])


def open_event_log(database_url: str | None, data_dir: str | Path) -> EventLog:
    """PostgreSQL when ``database_url`` is set, else the SQLite file in the data directory (refused
    for a data directory whose record is a database: ``check_record``)."""
    check_record(database_url, data_dir)
    if database_url:
        from retrieval.storage.postgres_log import PostgresEventLog

        log = PostgresEventLog(database_url)
        note_record(database_url, data_dir)
        return log
    from retrieval.storage.sqlite_log import SqliteEventLog

    return SqliteEventLog(Path(data_dir) / "events.sqlite3")
