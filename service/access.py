"""Who may call what: API keys with scopes, stored only as hashes, and an audit log of admin actions.

A key looks like ``hr_<id>_<secret>``: the id finds the key, the secret is checked against its
SHA-256 (the secret is 32 random bytes, so a fast hash is as safe as a slow one). Access control is
on as soon as one key is active; with none, every route is open (``hybridrec serve`` says so, and
refuses a non-loopback address unless told it is insecure). Keys and the audit log live beside the
event log: in ``<data_dir>/access.sqlite3``, or in PostgreSQL where the service's system of record is
there (``HYBRIDREC_DATABASE_URL``), so that every worker and instance sees a key revoked on any of
them at once. The CLI manages keys while the service runs.

Example::

    keys = AccessKeys(Path("data"))
    created = keys.create("shop frontend", {"read", "write"})   # created.secret is shown once
    keys.authenticate(created.secret).scopes                     # frozenset({'read', 'write'})
    keys.revoke(created.id)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from retrieval.storage.event_log import DatabaseUnavailable, check_record, note_record
from retrieval.storage.sqlite_log import connect_file

READ, WRITE, ADMIN = "read", "write", "admin"
SCOPES = (READ, WRITE, ADMIN)
ACCESS_FILE = "access.sqlite3"
KEY_PREFIX = "hr_"
RECOGNISED_FOR = 1.0  # seconds a rate limit trusts its list of active keys (a key made elsewhere: about this late)
log = logging.getLogger("hybridrec.service")
# The OpenAPI document's two ways to send a key; every scoped route accepts either.
SECURITY_SCHEMES = {
    "bearer": SecurityScheme(type="http", scheme="bearer", description="Authorization: Bearer <API key>"),
    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header",
                             description="X-API-Key: <API key>"),
}
SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}]
SECURITY_COMPONENTS = Components(security_schemes=SECURITY_SCHEMES)

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, secret_sha256 TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION NOT NULL, key_id TEXT,
    action TEXT NOT NULL, target TEXT, detail TEXT
);
"""
_SCHEMA_LOCK = 0x68796273  # instances creating the tables at the same moment take turns

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, scopes TEXT NOT NULL, secret_sha256 TEXT NOT NULL,
    created REAL NOT NULL, revoked REAL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, key_id TEXT, action TEXT NOT NULL,
    target TEXT, detail TEXT
);
"""


class KeyInfo(msgspec.Struct):
    """A key as it may be shown after its creation: never its secret."""

    id: str
    name: str
    scopes: list[str]
    created: float
    revoked: float | None = None


class CreatedKey(KeyInfo):
    secret: str = ""  # the whole key, shown once


class AuditEntry(msgspec.Struct):
    at: float
    key_id: str | None  # None: access control was off
    action: str
    target: str | None
    detail: str | None


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the key's id and scopes, or nobody while access control is off."""

    key_id: str | None
    scopes: frozenset[str]


OPEN = Caller(None, frozenset(SCOPES))


def parse_scopes(scopes: Iterable[str] | str) -> set[str]:
    """Scopes from a list or a comma-separated string; ValueError names an unknown one.

    >>> sorted(parse_scopes("read, write"))
    ['read', 'write']
    """
    if isinstance(scopes, str):
        scopes = scopes.split(",")
    wanted = {s.strip() for s in scopes if s.strip()}
    unknown = wanted - set(SCOPES)
    if unknown or not wanted:
        raise ValueError(f"scopes must be one or more of {', '.join(SCOPES)}; got {', '.join(sorted(scopes)) or 'none'}")
    return wanted


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _Rows:
    """A statement's result, read before its connection goes back to the pool."""

    def __init__(self, rows: list[tuple], rowcount: int):
        self._rows, self.rowcount = rows, rowcount

    def fetchall(self) -> list[tuple]:
        return self._rows

    def fetchone(self) -> tuple | None:
        return self._rows[0] if self._rows else None


class _PostgresAccess:
    """The few calls ``AccessKeys`` makes of sqlite3, on a pool of autocommit PostgreSQL
    connections, each checked before use: a database restart or failover costs no request more
    than a reconnect (one connection held for the process's life stayed broken)."""

    def __init__(self, url: str):
        import psycopg
        from psycopg_pool import ConnectionPool

        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(_POSTGRES_SCHEMA)
        except psycopg.Error as err:
            raise DatabaseUnavailable.at(url, err) from None
        self._pool = ConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True,
                                    name="hybridrec-access", timeout=30.0, check=ConnectionPool.check_connection)

    def execute(self, sql: str, args: tuple = ()) -> _Rows:
        with self._pool.connection() as conn:
            cur = conn.execute(sql.replace("?", "%s"), args)
            return _Rows(cur.fetchall() if cur.description else [], cur.rowcount)

    def close(self) -> None:
        self._pool.close()


class AccessKeys:
    """API keys and the audit log of one data directory, or of a PostgreSQL database."""

    def __init__(self, data_dir: str | Path, database_url: str | None = None):
        check_record(database_url, data_dir)  # keys made in a SQLite file the service never reads would be lost
        if database_url:
            self._db = _PostgresAccess(database_url)
            note_record(database_url, data_dir)
        else:
            path = Path(data_dir)
            path.mkdir(parents=True, exist_ok=True)
            self._db = connect_file(path / ACCESS_FILE)
            self._db.execute("PRAGMA synchronous=FULL")  # a revoked key stays revoked after a crash
            self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._active_digests: frozenset[str] = frozenset()  # of the active keys, for rate limits
        self._digests_read = 0.0  # when (time.monotonic) they were read
        self._reading = threading.Lock()
        self._read_digests()

    def create(self, name: str, scopes: Iterable[str] | str) -> CreatedKey:
        """A new key; its secret is in the result and nowhere else."""
        wanted = sorted(parse_scopes(scopes))
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        whole = f"{KEY_PREFIX}{key_id}_{secret}"
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                             (key_id, name, ",".join(wanted), _sha256(whole), now))
        self._read_digests(wait=True)
        return CreatedKey(key_id, name, wanted, now, None, whole)

    def revoke(self, key_id: str) -> bool:
        """True if an active key was revoked."""
        with self._lock:
            cur = self._db.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                   (time.time(), key_id))
        self._read_digests(wait=True)
        return cur.rowcount == 1

    def list(self, include_revoked: bool = False) -> list[KeyInfo]:
        sql = "SELECT id, name, scopes, created, revoked FROM api_keys"
        sql += "" if include_revoked else " WHERE revoked IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created").fetchall()
        return [KeyInfo(r[0], r[1], r[2].split(","), r[3], r[4]) for r in rows]

    def enabled(self) -> bool:
        """Access control is on while at least one key is active."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM api_keys WHERE revoked IS NULL LIMIT 1").fetchone() is not None

    def recognised(self, key: str | None) -> str | None:
        """``key``'s SHA-256 if it is an active key as of at most about ``RECOGNISED_FOR`` seconds
        ago, else None: for counting a request against its key's rate limit, never for letting it
        in (``authenticate`` does that). It never waits for the store: an older list is read again
        in a thread."""
        if time.monotonic() - self._digests_read > RECOGNISED_FOR and not self._reading.locked():
            threading.Thread(target=self._read_digests, daemon=True, name="active keys").start()
        digest = _sha256(key) if key else None
        return digest if digest in self._active_digests else None

    def _read_digests(self, wait: bool = False) -> None:
        """Read the active keys again; ``wait``: after one's own write, for a read already under way
        (it may have read before the write) rather than skip."""
        if not self._reading.acquire(blocking=wait):
            return
        try:
            with self._lock:
                rows = self._db.execute("SELECT secret_sha256 FROM api_keys WHERE revoked IS NULL").fetchall()
            self._active_digests = frozenset(row[0] for row in rows)
        except Exception as err:  # what is known stays known while the store does not answer
            log.warning("active API keys not read again (%s); rate limits count by the keys known before", err)
        finally:
            self._digests_read = time.monotonic()
            self._reading.release()

    def authenticate(self, key: str | None) -> Caller | None:
        """The caller a key stands for, or None for a missing, malformed, unknown or revoked key."""
        if not key or not key.startswith(KEY_PREFIX) or key.count("_") < 2:
            return None
        key_id = key[len(KEY_PREFIX):].split("_", 1)[0]
        with self._lock:
            row = self._db.execute("SELECT scopes, secret_sha256 FROM api_keys WHERE id = ? AND revoked IS NULL",
                                   (key_id,)).fetchone()
        if row is None or not hmac.compare_digest(row[1], _sha256(key)):
            return None
        return Caller(key_id, frozenset(row[0].split(",")))

    def audit(self, caller: Caller | None, action: str, target: str | None = None, detail: str | None = None) -> None:
        """Record who did what to what; durable before it returns."""
        with self._lock:
            self._db.execute("INSERT INTO audit_log (at, key_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                             (time.time(), caller.key_id if caller else None, action, target, detail))

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first."""
        with self._lock:
            rows = self._db.execute("SELECT at, key_id, action, target, detail FROM audit_log "
                                    "ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [AuditEntry(*r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def presented_key(connection: ASGIConnection) -> str | None:
    """The key a request sends: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = connection.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return connection.headers.get("x-api-key")


def require_scope(keys: AccessKeys):
    """A Litestar guard: a route whose ``opt["scope"]`` names a scope needs a key that has it (401
    without a valid key, 403 with a key that lacks the scope); the caller is kept in the request's
    state for the audit log. Routes without a scope (health, the API docs) are public."""

    def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        scope = handler.opt.get("scope")
        if scope is None:
            return
        caller = keys.authenticate(presented_key(connection))
        if caller is None and not keys.enabled():  # no key yet: access control is off
            connection.state.caller = OPEN
            return
        if caller is None:
            raise NotAuthorizedException(
                detail="a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                       "(create one with `hybridrec keys create`)", headers={"WWW-Authenticate": "Bearer"})
        if scope not in caller.scopes:
            raise PermissionDeniedException(detail=f"this key ({caller.key_id}) lacks the '{scope}' scope "
                                                   f"this route needs; it has {', '.join(sorted(caller.scopes))}")
        connection.state.caller = caller

    return guard


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_and_port(url: str) -> tuple[str, int | None] | None:
    """``https://Example.com`` and ``https://example.com:443`` alike: (host, port), a default port
    written out; None for what is no URL."""
    try:
        parts = urlsplit(url)
        return (parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme)) if parts.hostname else None
    except ValueError:  # a port that is no number
        return None


def refuse_cross_origin_writes(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """A Litestar guard: a request that changes something, sent by a browser from a page of another
    origin, is refused (403). Browsers send such "simple" requests without asking first, and while
    no key exists every route is open: any page an operator visits could write items or make the
    first key. A browser always sends ``Origin`` on them; API clients (curl, SDKs) send none."""
    if connection.scope.get("method") in SAFE_METHODS:
        return
    origin = connection.headers.get("origin")
    if origin is None:
        return
    host = connection.headers.get("host", "")
    theirs = _host_and_port(origin)  # None: "null" (a sandboxed frame, a file) or no URL at all
    if theirs is None or theirs != _host_and_port(f"{urlsplit(origin).scheme or 'http'}://{host}"):
        raise PermissionDeniedException(
            detail=f"origin: a request from a page at {origin[:100]!r} may not change this service at {host[:100]!r}; "
                   "call it from your server, or from the service's own console")


def is_loopback(host: str) -> bool:
    """
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
