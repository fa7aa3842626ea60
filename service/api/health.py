"""``/health`` (liveness and counts) and ``/ready`` (may this instance take traffic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec
from litestar import Controller, Response, get

from retrieval.engine import Engine
from service.access import AccessKeys
from service.api.dependencies import ReindexJob
from service.observability import probe

T = TypeVar("T")


class LogPosition(msgspec.Struct):
    """How far this instance has applied the shared system of record."""

    database: str  # "postgresql" (shared by every instance) or "sqlite" (this process's own)
    instance: str | None  # the worker slot, None: the data directory itself
    applied: int  # the last change number this instance has applied
    head: int | None  # the newest change number committed by any instance; None: the database does not answer


class Health(msgspec.Struct):
    """Liveness: answered while the process runs, within seconds, whatever does not answer behind
    it. ``status`` is "ok", or "degraded" with ``problems`` saying which part did not answer (a
    count it could not read is None); readiness (``/ready``) is what takes an instance out of traffic."""

    status: str
    items: int | None
    events: int | None
    store: str
    encoder: str
    log: LogPosition
    problems: list[str] = []


class Readiness(msgspec.Struct):
    ready: bool
    checks: dict[str, str]  # each check: "ok", or what is not ready yet
    profile_lag: int  # logged events whose profiles are not refreshed yet
    reranker: str | None  # the version serving, None: fused retrieval


def log_position(engine: Engine, head: int | None) -> LogPosition:
    return LogPosition("postgresql" if engine.config.database_url else "sqlite", engine.config.instance,
                       engine.follower.position if engine.follower is not None else head or 0, head)


def _read(name: str, read: Callable[[], T], problems: list[str]) -> T | None:
    """``read()`` within ``PROBE_SECONDS``, or None with what went wrong added to ``problems``."""
    try:
        return probe(read)
    except Exception as err:
        problems.append(f"{name}: not answering: {err}")
        return None


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/health", sync_to_thread=True, summary="Liveness and counts")
    def health(self, engine: Engine) -> Health:
        problems: list[str] = []
        items = _read("store", engine.catalogue.count, problems)
        events = _read("log", engine.log.count, problems)
        head = _read("log", engine.log.head, problems) if events is not None else None
        return Health(
            status="degraded" if problems else "ok", items=items, events=events,
            store="qdrant-server" if engine.config.qdrant_url else "embedded",
            encoder=engine.encoder.name, log=log_position(engine, head), problems=problems,
        )

    @get("/ready", sync_to_thread=True, summary="Readiness: the store, the system of record and the key store answer, "
                                                "profiles are caught up (503 until then); whether a reindex runs")
    def ready(self, engine: Engine, reindex_job: ReindexJob, access_keys: AccessKeys) -> Response[Readiness]:
        checks: dict[str, str] = {}
        lag = 0

        def check(name: str, answer: Callable[[], str]) -> None:
            try:
                checks[name] = probe(answer)
            except Exception as err:  # a part that cannot answer is what readiness must report
                checks[name] = f"not answering: {err}"

        def store() -> str:
            engine.catalogue.count()
            return "ok"

        def log() -> str:
            behind = engine.follower.lag() if engine.follower is not None else 0
            return "ok" if behind == 0 else f"{behind} changes of other instances not applied yet"

        def profiles() -> str:
            nonlocal lag
            lag = engine.profiles.lag()
            return "ok" if lag == 0 else f"{lag} logged events not yet in profiles"

        def keys() -> str:
            access_keys.enabled()  # every keyed request asks the key store
            return "ok"

        for name, answer in (("store", store), ("log", log), ("profiles", profiles), ("keys", keys)):
            check(name, answer)
        checks["reindex"] = "ok" if not reindex_job.running else "a reindex is running; item writes are refused"
        ready = all(v == "ok" for k, v in checks.items() if k != "reindex")
        reranker = engine.recommender.reranker
        body = Readiness(ready, checks, lag, reranker.version if reranker else None)
        return Response(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})
