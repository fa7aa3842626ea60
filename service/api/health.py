"""``/health``: is the service up, and what does it hold."""

from __future__ import annotations

import msgspec
from litestar import Controller, get

from retrieval.engine import Engine


class Health(msgspec.Struct):
    status: str
    items: int
    events: int
    store: str
    encoder: str


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/", sync_to_thread=True, summary="Liveness and counts")
    def health(self, engine: Engine) -> Health:
        return Health(
            status="ok", items=engine.catalogue.count(), events=engine.log.count(),
            store="qdrant-server" if engine.config.qdrant_url else "embedded",
            encoder=engine.encoder.name,
        )
