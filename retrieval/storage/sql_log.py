"""The event log's queries over the schema both SQL back-ends hold, written once.

Statements are written with ``?`` placeholders (none has a ``?`` of its own) and put into the
driver's style by ``_sql``. A back-end says how to reach its database: a write transaction
(``_transaction``), a read (``_fetch_all``), one consistent cut for ``changes_after``
(``_snapshot``), and the few places its SQL differs (the current time, a membership test).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from retrieval.storage.event_log import (
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

T = TypeVar("T")
Take = Callable[[int], int]

_EVENT_COLUMNS = "seq, user_id, item_id, type, value, query, ts"
# Both back-ends' migration to event ids: an event sent again with the id it had is logged once.
EVENT_IDS = """
ALTER TABLE events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX events_event_id ON events (user_id, event_id) WHERE event_id IS NOT NULL;
"""


class SqlEventLog(ABC):
    """The ``EventLog`` interface over the shared SQL schema, less how to reach the database.

    Why: SQLite and PostgreSQL hold the same tables, so each query lives here once and a back-end
    keeps only its connections, migrations and dialect."""

    PLACEHOLDER = "?"  # the driver's parameter style
    NOW_EPOCH: str  # SQL for the current time in seconds since the epoch
    MAX_IN_LIST = 500  # the most values one ``_member_of`` binds in a statement (SQLite limits variables)
    _secret: bytes | None = None

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """One write transaction, as a cursor: committed when the block ends, rolled back when it raises."""

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Any]:
        """A connection whose reads see one state of the database, with no commit between them."""

    @abstractmethod
    def _fetch_all(self, sql: str, args: tuple) -> list[tuple]:
        """Run one read (SQL in the driver's style) and return its rows."""

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, sql: str) -> str:
        return sql if self.PLACEHOLDER == "?" else sql.replace("?", self.PLACEHOLDER)

    def _member_of(self, values: Sequence[Any]) -> tuple[str, tuple]:
        """The condition "is one of ``values``" and its arguments; at most ``MAX_IN_LIST`` values."""
        return f"IN ({', '.join('?' * len(values))})", tuple(values)

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._fetch_all(self._sql(sql), args)

    def _one(self, sql: str, args: tuple = ()) -> Any:
        rows = self._all(sql, args)
        return rows[0][0] if rows else None

    def _write(self, work: Callable[[Any, Take], T]) -> T:
        """Run ``work(cursor, take)`` in one transaction; ``take(n)`` reserves the next ``n``
        numbers of the change sequence (the ``head`` row) and returns the first."""
        with self._transaction() as cur:
            def take(n: int) -> int:
                (last,) = cur.execute(self._sql("UPDATE head SET seq = seq + ? WHERE one = 1 RETURNING seq"),
                                      (n,)).fetchone()
                return last - n + 1
            return work(cur, take)

    def _insert_numbered(self, sql: str, rows: list[tuple]) -> list[int]:
        """Insert ``rows`` in one transaction, each given the next number of the change sequence as
        its last argument; returns the numbers."""
        if not rows:
            return []

        def work(cur, take):
            first = take(len(rows))
            cur.executemany(self._sql(sql), [(*row, first + i) for i, row in enumerate(rows)])
            return list(range(first, first + len(rows)))
        return self._write(work)

    def append(self, events: list[ParsedEvent]) -> list[int | None]:
        if not events:
            return []

        def work(cur, take):
            first = take(len(events))
            # An event whose (user, event id) is logged already, or earlier in this batch, is not
            # inserted (its number stays unused): None in its place.
            cur.executemany(self._sql(
                "INSERT INTO events (user_id, item_id, type, value, query, ts, event_id, seq) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                [(e.user_id, e.item_id, e.type, e.value, e.query, e.timestamp, e.event_id, first + i)
                 for i, e in enumerate(events)])
            last = first + len(events) - 1
            if not any(e.event_id for e in events):
                return list(range(first, last + 1))
            cur.execute(self._sql("SELECT seq FROM events WHERE seq >= ? AND seq <= ?"), (first, last))
            logged = {row[0] for row in cur.fetchall()}
            return [seq if seq in logged else None for seq in range(first, last + 1)]
        return self._write(work)

    def user_events(self, user_id: str, limit: int | None = None) -> list[LoggedEvent]:
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id = ? ORDER BY seq DESC"
        rows = self._all(sql + (" LIMIT ?" if limit else ""), (user_id, limit) if limit else (user_id,))
        return [LoggedEvent(*row) for row in reversed(rows)]

    def user_item_ids(self, user_id: str, types: tuple[str, ...] | None = None) -> set[str]:
        sql = "SELECT DISTINCT item_id FROM events WHERE user_id = ? AND item_id IS NOT NULL"
        args: tuple = (user_id,)
        if types:
            condition, type_args = self._member_of(types)
            sql += f" AND type {condition}"
            args += type_args
        return {r[0] for r in self._all(sql, args)}

    def event_counts(self, user_id: str) -> dict[str, int]:
        return dict(self._all("SELECT type, COUNT(*) FROM events WHERE user_id = ? GROUP BY type", (user_id,)))

    def iter_events(self, batch: int = 10_000, after: int = 0) -> Iterator[LoggedEvent]:
        last = after
        while True:
            rows = self._all(f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch))
            if not rows:
                return
            for row in rows:
                yield LoggedEvent(*row)
            last = rows[-1][0]

    def count(self, after: int = 0) -> int:
        return self._one("SELECT COUNT(*) FROM events WHERE seq > ?", (after,))

    def user_ids(self) -> list[str]:
        return [r[0] for r in self._all("SELECT user_id FROM events UNION SELECT user_id FROM users")]

    def set_preferences(self, user_id: str, preferences: str | None, attributes: dict[str, Any], now: float) -> None:
        def work(cur, take):
            cur.execute(self._sql(
                "INSERT INTO users (user_id, preferences, attributes, updated, seq) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET preferences = excluded.preferences, "
                "attributes = excluded.attributes, updated = excluded.updated, seq = excluded.seq"),
                (user_id, preferences, json.dumps(attributes), now, take(1)))
        self._write(work)

    def preferences(self, user_id: str) -> StatedPreferences | None:
        rows = self._all("SELECT user_id, preferences, attributes, updated FROM users WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        uid, prefs, attrs, updated = rows[0]
        return StatedPreferences(uid, prefs, json.loads(attrs), updated)

    def forget_user(self, user_id: str) -> int:
        key = self.user_key(user_id)

        def work(cur, take):
            n = cur.execute(self._sql("DELETE FROM events WHERE user_id = ?"), (user_id,)).rowcount
            known = cur.execute(self._sql("DELETE FROM users WHERE user_id = ?"), (user_id,)).rowcount
            cur.execute(self._sql("DELETE FROM profile_keys WHERE user_id = ?"), (user_id,))
            if n or known:
                cur.execute(self._sql(f"INSERT INTO forgotten (seq, user_key, ts) VALUES (?, ?, {self.NOW_EPOCH})"),
                            (take(1), key))
            return n
        return self._write(work)

    def user_key(self, user_id: str) -> str:
        if self._secret is None:
            secret = self.get_meta("user_key_secret")
            if secret is None:
                def work(cur, take):
                    # Instances starting together may each propose one; the first to commit is everyone's.
                    cur.execute(self._sql("INSERT INTO meta (key, value) VALUES ('user_key_secret', ?) "
                                          "ON CONFLICT DO NOTHING"), (os.urandom(32).hex(),))
                    return cur.execute("SELECT value FROM meta WHERE key = 'user_key_secret'").fetchone()[0]
                secret = self._write(work)
            self._secret = bytes.fromhex(secret)
        return keyed_digest(self._secret, user_id)

    def profile_salt(self, user_id: str) -> bytes | None:
        """The user's random salt, which names their profile in the vector store (see
        ``Profiles.point_id``); None before ``profile_salts`` made one. Forgetting deletes it."""
        salt = self._one("SELECT salt FROM profile_keys WHERE user_id = ?", (user_id,))
        return bytes(salt) if salt is not None else None

    def profile_salts(self, user_ids: list[str]) -> dict[str, bytes]:
        """The salts of several users, made in one transaction for those without one: a refresh
        of many new users' profiles is one durable write, not one per user."""
        if not user_ids:
            return {}

        def work(cur, take):
            cur.executemany(self._sql("INSERT INTO profile_keys (user_id, salt) VALUES (?, ?) ON CONFLICT DO NOTHING"),
                            [(user_id, os.urandom(16)) for user_id in user_ids])
            salts: dict[str, bytes] = {}
            for start in range(0, len(user_ids), self.MAX_IN_LIST):
                condition, args = self._member_of(user_ids[start:start + self.MAX_IN_LIST])
                rows = cur.execute(self._sql(f"SELECT user_id, salt FROM profile_keys WHERE user_id {condition}"),
                                   args).fetchall()
                salts.update((user_id, bytes(salt)) for user_id, salt in rows)
            return salts
        return self._write(work)

    def first_seq(self, user_id: str) -> int | None:
        return self._one("SELECT MIN(seq) FROM events WHERE user_id = ?", (user_id,))

    def max_seq(self) -> int:
        return self._one("SELECT COALESCE(MAX(seq), 0) FROM events")

    def head(self) -> int:
        return self._one("SELECT seq FROM head")

    def users_after(self, seq: int) -> list[str]:
        return [r[0] for r in self._all("SELECT user_id FROM events WHERE seq > ? UNION "
                                        "SELECT user_id FROM users WHERE seq > ?", (seq, seq))]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        value = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if value is None else value

    def set_meta(self, key: str, value: str) -> None:
        self._write(lambda cur, take: cur.execute(self._sql(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
            (key, value)))

    def put_items(self, collection: str, points: list[StoredPoint]) -> list[int]:
        return self._insert_numbered(
            "INSERT INTO items (collection, id, payload, vector, sparse, seq) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (collection, id) DO UPDATE SET payload = excluded.payload, vector = excluded.vector, "
            "sparse = excluded.sparse, seq = excluded.seq",
            [(collection, p.id, json.dumps(p.payload), vector_bytes(p.vector), sparse_json(p.sparse)) for p in points])

    def delete_items(self, collection: str, ids: list[str]) -> list[int]:
        # A deleted item stays as a row without payload, so other instances learn of the delete.
        return self._insert_numbered(
            "INSERT INTO items (collection, id, seq) VALUES (?, ?, ?) ON CONFLICT (collection, id) DO UPDATE "
            "SET payload = NULL, vector = NULL, sparse = NULL, seq = excluded.seq",
            [(collection, item_id) for item_id in ids])

    def drop_items(self, collection: str) -> None:
        """Remove a collection's rows (a replaced layout's, after a reindex)."""
        self._write(lambda cur, take: cur.execute(self._sql("DELETE FROM items WHERE collection = ?"), (collection,)))

    def item_collections(self) -> list[str]:
        return [row[0] for row in self._all("SELECT DISTINCT collection FROM items")]

    def forgotten_keys(self) -> set[str]:
        return {row[0] for row in self._all("SELECT user_key FROM forgotten")}

    def stored_items(self, collection: str, batch: int = 512) -> Iterator[list[StoredPoint]]:
        last = ""
        while True:
            rows = self._all("SELECT id, payload, vector, sparse FROM items WHERE collection = ? AND id > ? "
                             "AND payload IS NOT NULL ORDER BY id LIMIT ?", (collection, last, batch))
            if not rows:
                return
            yield [stored_item(*row) for row in rows]
            last = rows[-1][0]

    def items_now(self, collection: str, ids: list[str]) -> dict[str, StoredPoint | None]:
        found: dict[str, StoredPoint | None] = dict.fromkeys(ids)
        for start in range(0, len(ids), self.MAX_IN_LIST):
            condition, args = self._member_of(ids[start:start + self.MAX_IN_LIST])
            for row in self._all(f"SELECT id, payload, vector, sparse FROM items WHERE collection = ? AND id {condition}",
                                 (collection, *args)):
                found[row[0]] = stored_item(*row) if row[1] is not None else None
        return found

    def changes_after(self, seq: int, limit: int = 10_000) -> Changes:
        with self._snapshot() as conn:
            def rows(sql: str, *args: Any) -> list[tuple]:
                return conn.execute(self._sql(sql), args).fetchall()
            ((head,),) = rows("SELECT seq FROM head")
            events = rows(f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                          seq, head, limit)
            if len(events) == limit:
                head = events[-1][0]  # the rest next time; the other kinds stop at the same number
            users = rows("SELECT seq, user_id FROM users WHERE seq > ? AND seq <= ? ORDER BY seq", seq, head)
            items = rows("SELECT seq, collection, id, payload, vector, sparse FROM items "
                         "WHERE seq > ? AND seq <= ? ORDER BY seq", seq, head)
            forgotten = rows("SELECT seq, user_key FROM forgotten WHERE seq > ? AND seq <= ? ORDER BY seq", seq, head)
        return changes_from_rows(head, events, users, items, forgotten)
