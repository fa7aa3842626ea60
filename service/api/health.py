"""``/health`` (liveness and counts) and ``/ready`` (may this instance take traffic)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Response, get

from retrieval.engine import Engine
from service.access import AccessKeys
from service.api.dependencies import ReindexJob
from service.observability import PROBES


class LogPosition(msgspec.Struct):
    """How far this instance has applied the shared system of record."""

    database: str  # "postgresql" (shared by every instance) or "sqlite" (this process's own)
    instance: str | None  # the worker slot, None: the data directory itself
    applied: int | None  # the last change number this instance has applied; None: not known (no answer)
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
    applied = engine.follower.position if engine.follower is not None else head
    return LogPosition("postgresql" if engine.config.database_url else "sqlite", engine.config.instance, applied, head)


def _said(answer: Any) -> str | None:
    """What a probe's failed answer says, or None for an answer."""
    return f"not answering: {answer}" if isinstance(answer, Exception) else None


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/health", sync_to_thread=True, summary="Liveness and counts (each read waits at most 2 s)")
    def health(self, engine: Engine) -> Health:
        answers = PROBES.read({"catalogue.count": engine.catalogue.count, "log.count": engine.log.count,
                               "log.head": engine.log.head})
        problems = [f"{part}: {said}" for part, name in (("store", "catalogue.count"), ("log", "log.count"),
                                                         ("log", "log.head"))
                    if (said := _said(answers[name])) is not None]
        items, events, head = (None if isinstance(answers[n], Exception) else answers[n]
                               for n in ("catalogue.count", "log.count", "log.head"))
        return Health(
            status="degraded" if problems else "ok", items=items, events=events,
            store="qdrant-server" if engine.config.qdrant_url else "embedded",
            encoder=engine.encoder.name, log=log_position(engine, head), problems=problems,
        )

    @get("/ready", sync_to_thread=True, summary="Readiness: the store, the system of record and the key store answer, "
                                                "profiles are caught up (503 until then); whether a reindex runs")
    def ready(self, engine: Engine, reindex_job: ReindexJob, access_keys: AccessKeys) -> Response[Readiness]:
        follower = engine.follower
        answers = PROBES.read({"catalogue.count": engine.catalogue.count,
                               "follower.lag": follower.lag if follower is not None else lambda: 0,
                               "profiles.lag": engine.profiles.lag,
                               "keys.enabled": access_keys.enabled})  # every keyed request asks the key store
        behind, lag = answers["follower.lag"], answers["profiles.lag"]
        checks = {
            "store": _said(answers["catalogue.count"]) or "ok",
            "log": _said(behind) or ("ok" if behind == 0 else f"{behind} changes of other instances not applied yet"),
            "profiles": _said(lag) or ("ok" if lag == 0 else f"{lag} logged events not yet in profiles"),
            "keys": _said(answers["keys.enabled"]) or "ok",
            "reindex": "ok" if not reindex_job.running else "a reindex is running; item writes are refused",
        }
        ready = all(v == "ok" for k, v in checks.items() if k != "reindex")
        reranker = engine.recommender.reranker
        body = Readiness(ready, checks, lag if isinstance(lag, int) else 0, reranker.version if reranker else None)
        return Response(body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "5"})
