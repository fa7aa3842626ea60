"""``/v1/admin``: operations on the running service."""

from __future__ import annotations

import msgspec
from litestar import Controller, get, post

from retrieval.engine import Engine


class RerankerState(msgspec.Struct):
    serving: str | None
    versions: list[dict]


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]

    @post("/reload", sync_to_thread=True, summary="Serve the newest accepted reranker", status_code=200)
    def reload(self, engine: Engine) -> RerankerState:
        # The new model is loaded before the swap; requests in flight finish on the old one.
        serving = engine.reload_reranker()
        return RerankerState(serving, [_summary(m) for m in engine.rerankers.all()])

    @get("/models", sync_to_thread=True, summary="Trained rerankers and which one is served")
    def models(self, engine: Engine) -> RerankerState:
        current = engine.recommender.reranker
        return RerankerState(current.version if current else None, [_summary(m) for m in engine.rerankers.all()])


def _summary(meta: dict) -> dict:
    keys = ("version", "created", "accepted", "reason", "blend", "groups", "train_users", "validation_users")
    return {k: meta.get(k) for k in keys}
