"""``/v1/admin``: operations on the running service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.exceptions import ClientException, ValidationException
from litestar.params import Parameter

from retrieval.engine import Engine
from service.access import ADMIN, SECURITY, AccessKeys, AuditEntry, Caller, CreatedKey, KeyInfo
from service.api.dependencies import ReindexJob, ReindexState
from service.api.errors import not_found


class RerankerState(msgspec.Struct):
    serving: str | None
    versions: list[dict]


class ReindexStart(msgspec.Struct, forbid_unknown_fields=True):
    """``encoder``: a local sentence-transformers folder; default the newest accepted one."""

    encoder: str | None = None


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new API key: a ``name`` to know it by and its ``scopes`` (read, write, admin)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    scopes: Annotated[list[str], msgspec.Meta(min_length=1, max_length=3)]


class Audit(msgspec.Struct):
    entries: list[AuditEntry]


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    security = SECURITY

    @post("/reload", opt={"scope": ADMIN}, sync_to_thread=True, summary="Serve the newest accepted reranker", status_code=200)
    def reload(self, engine: Engine, access_keys: AccessKeys, caller: Caller | None) -> RerankerState:
        # The new model is loaded before the swap; requests in flight finish on the old one.
        serving = engine.reload_reranker()
        access_keys.audit(caller, "reload models", serving)
        return RerankerState(serving, [_summary(m) for m in engine.rerankers.all()])

    @post("/reindex", opt={"scope": ADMIN}, sync_to_thread=True, summary="Re-encode everything with an encoder, then switch", status_code=202)
    def start_reindex(self, data: ReindexStart, engine: Engine, reindex_job: ReindexJob, access_keys: AccessKeys,
                      caller: Caller | None) -> ReindexState:
        path = data.encoder or engine.models.latest_accepted_encoder()
        if path is None:
            raise ClientException(detail="encoder: no accepted encoder under models/encoder; train one "
                                         "(hybridrec train encoder) or name a folder",
                                  extra=[{"key": "encoder", "message": "no accepted encoder", "source": "body"}])
        if not Path(path).is_dir():
            raise ClientException(detail=f"encoder: {path} is not a folder",
                                  extra=[{"key": "encoder", "message": "not a folder", "source": "body"}])
        state = reindex_job.start(engine, str(path))
        access_keys.audit(caller, "start reindex", str(path))
        return state

    @get("/reindex", opt={"scope": ADMIN}, sync_to_thread=False, summary="State of the online reindex")
    def reindex_state(self, reindex_job: ReindexJob) -> ReindexState:
        return reindex_job.state

    @get("/models", opt={"scope": ADMIN}, sync_to_thread=True, summary="Trained rerankers and which one is served")
    def models(self, engine: Engine) -> RerankerState:
        current = engine.recommender.reranker
        return RerankerState(current.version if current else None, [_summary(m) for m in engine.rerankers.all()])


    @post("/keys", opt={"scope": ADMIN}, sync_to_thread=True, summary="Create an API key (its secret is shown once)",
          status_code=201)
    def create_key(self, data: KeyCreate, access_keys: AccessKeys, caller: Caller | None) -> CreatedKey:
        try:
            created = access_keys.create(data.name, data.scopes)
        except ValueError as err:
            raise ValidationException(detail=f"scopes: {err}",
                                      extra=[{"key": "scopes", "message": str(err), "source": "body"}]) from None
        access_keys.audit(caller, "create key", created.id, f"{data.name}: {','.join(created.scopes)}")
        return created

    @get("/keys", opt={"scope": ADMIN}, sync_to_thread=True, summary="API keys (never their secrets)")
    def list_keys(self, access_keys: AccessKeys, include_revoked: bool = False) -> list[KeyInfo]:
        return access_keys.list(include_revoked=include_revoked)

    @delete("/keys/{key_id:str}", opt={"scope": ADMIN}, sync_to_thread=True, summary="Revoke an API key",
            status_code=204)
    def revoke_key(self, key_id: str, access_keys: AccessKeys, caller: Caller | None) -> None:
        if not access_keys.revoke(key_id):
            raise not_found("active API key", key_id)
        access_keys.audit(caller, "revoke key", key_id)

    @get("/audit", opt={"scope": ADMIN}, sync_to_thread=True, summary="Who did what: admin actions and forgotten users")
    def audit(self, access_keys: AccessKeys,
              limit: Annotated[int, Parameter(ge=1, le=1000, description="newest entries")] = 100) -> Audit:
        return Audit(access_keys.audit_log(limit))


def _summary(meta: dict) -> dict:
    keys = ("version", "created", "accepted", "reason", "base_model", "ranker", "cross_encoder", "log_users",
            "train_users", "validation_users")
    return {k: meta.get(k) for k in keys}
