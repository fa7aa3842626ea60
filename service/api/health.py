"""``/health`` (liveness and counts) and ``/ready`` (may this instance take traffic)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from litestar import Controller, Response, get

from retrieval.engine import Engine
from service.access import AccessKeys
from service.api.dependencies import ReindexJob


class LogPosition(msgspec.Struct):
    """How far this instance has applied the shared system of record."""

    database: str  # "postgresql" (shared by every instance) or "sqlite" (this process's own)
    instance: str | None  # the worker slot, None: the data directory itself
    applied: int  # the last change number this instance has applied
    head: int  # the newest change number committed by any instance


class Health(msgspec.Struct):
    status: str
    items: int
    events: int
    store: str
    encoder: str
    log: LogPosition


class Readiness(msgspec.Struct):
    ready: bool
    checks: dict[str, str]  # each check: "ok", or what is not ready yet
    profile_lag: int  # logged events whose profiles are not refreshed yet
    reranker: str | None  # the version serving, None: fused retrieval


def log_position(engine: Engine) -> LogPosition:
    head = engine.log.head()
    return LogPosition("postgresql" if engine.config.database_url else "sqlite", engine.config.instance,
                       engine.follower.position if engine.follower is not None else head, head)


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/health", sync_to_thread=True, summary="Liveness and counts")
    def health(self, engine: Engine) -> Health:
        return Health(
            status="ok", items=engine.catalogue.count(), events=engine.log.count(),
            store="qdrant-server" if engine.config.qdrant_url else "embedded",
            encoder=engine.encoder.name, log=log_position(engine),
        )

    @get("/ready", sync_to_thread=True, summary="Readiness: the store, the system of record and the key store answer, "
                                                "profiles are caught up (503 until then); whether a reindex runs")
    def ready(self, engine: Engine, reindex_job: ReindexJob, access_keys: AccessKeys) -> Response[Readiness]:
        checks: dict[str, str] = {}
        lag = 0

        def check(name: str, answer: Callable[[], str]) -> None:
            try:
                checks[name] = answer()
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
