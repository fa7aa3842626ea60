"""``/v1/admin``: operations on the running service."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Controller, get, post
from litestar.exceptions import ClientException

from retrieval.engine import Engine
from service.api.dependencies import ReindexJob, ReindexState


class RerankerState(msgspec.Struct):
    serving: str | None
    versions: list[dict]


class ReindexStart(msgspec.Struct, forbid_unknown_fields=True):
    """``encoder``: a local sentence-transformers folder; default the newest accepted one."""

    encoder: str | None = None


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]

    @post("/reload", sync_to_thread=True, summary="Serve the newest accepted reranker", status_code=200)
    def reload(self, engine: Engine) -> RerankerState:
        # The new model is loaded before the swap; requests in flight finish on the old one.
        serving = engine.reload_reranker()
        return RerankerState(serving, [_summary(m) for m in engine.rerankers.all()])

    @post("/reindex", sync_to_thread=True, summary="Re-encode everything with an encoder, then switch", status_code=202)
    def start_reindex(self, data: ReindexStart, engine: Engine, reindex_job: ReindexJob) -> ReindexState:
        path = data.encoder or engine.models.latest_accepted_encoder()
        if path is None:
            raise ClientException(detail="encoder: no accepted encoder under models/encoder; train one "
                                         "(hybridrec train encoder) or name a folder",
                                  extra=[{"key": "encoder", "message": "no accepted encoder", "source": "body"}])
        if not Path(path).is_dir():
            raise ClientException(detail=f"encoder: {path} is not a folder",
                                  extra=[{"key": "encoder", "message": "not a folder", "source": "body"}])
        return reindex_job.start(engine, str(path))

    @get("/reindex", sync_to_thread=False, summary="State of the online reindex")
    def reindex_state(self, reindex_job: ReindexJob) -> ReindexState:
        return reindex_job.state

    @get("/models", sync_to_thread=True, summary="Trained rerankers and which one is served")
    def models(self, engine: Engine) -> RerankerState:
        current = engine.recommender.reranker
        return RerankerState(current.version if current else None, [_summary(m) for m in engine.rerankers.all()])


def _summary(meta: dict) -> dict:
    keys = ("version", "created", "accepted", "reason", "base_model", "ranker", "cross_encoder", "log_users",
            "train_users", "validation_users")
    return {k: meta.get(k) for k in keys}
