"""``/v1/admin``: operations on the running service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, post
from litestar.exceptions import ClientException, NotFoundException, ValidationException
from litestar.params import Parameter

from retrieval.engine import Engine
from retrieval.reindex import SHARED_REINDEX
from service.access import ADMIN, SECURITY, AccessKeys, AuditEntry, Caller, CreatedKey, KeyInfo
from service.api.dependencies import IngestJobs, ReindexJob, ReindexState
from service.api.errors import not_found
from service.settings import Settings


class RerankerState(msgspec.Struct):
    """The reranker that serves and its versions; the sequence encoder that serves (None: none)."""

    serving: str | None
    versions: list[dict]
    sequence: str | None = None
    not_loaded: list[str] = []  # the newest accepted models that could not be loaded, and why not


class EncoderVersion(msgspec.Struct):
    """A trained encoder version and its verdict (only accepted ones may be reindexed with)."""

    version: str
    accepted: bool
    reason: str | None
    created: str | None


class ModelsState(RerankerState):
    """The rerankers (``serving``, ``versions``), the trained encoder versions, and the encoder the
    index serves with (a trained version's name after a reindex with it)."""

    encoders: list[EncoderVersion] = []
    serving_encoder: str | None = None
    sequences: list[EncoderVersion] = []


class ReindexStart(msgspec.Struct, forbid_unknown_fields=True):
    """``encoder``: an accepted encoder version this service keeps (e.g. ``v20250101-120000``), or
    a folder the ``reindex_encoders`` setting lists; default the newest accepted version."""

    encoder: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new API key: a ``name`` to know it by and its ``scopes`` (read, write, admin)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    scopes: Annotated[list[Literal["read", "write", "admin"]], msgspec.Meta(min_length=1, max_length=3)]


class Audit(msgspec.Struct):
    entries: list[AuditEntry]


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    security = SECURITY

    @post("/reload", opt={"scope": ADMIN}, sync_to_thread=True,
          summary="Serve the newest accepted reranker and sequence encoder", status_code=200)
    def reload(self, engine: Engine, access_keys: AccessKeys, caller: Caller | None) -> RerankerState:
        # The new models are loaded before the swap; requests in flight finish on the old ones.
        space = engine.item_space()
        newest_reranker = next(iter(engine.rerankers.fitting(space)), {}).get("version")
        newest_sequence = (engine.sequences.newest_fitting(space) or {}).get("version")
        try:
            serving = engine.reload_reranker()
            sequence = engine.reload_sequence()
        except Exception as err:  # what was swapped before the failure serves: the audit says so
            current = engine.recommender.reranker
            access_keys.audit(caller, "reload models", current.version if current else None,
                              f"failed halfway ({type(err).__name__}: {err}); the reranker above serves")
            raise
        not_loaded = [f"{kind} {newest} is the newest accepted one but could not be loaded (the service's log says "
                      f"why); {f'{current} still serves' if current else 'none serves'}"
                      for kind, newest, current in (("reranker", newest_reranker, serving),
                                                    ("sequence encoder", newest_sequence, sequence))
                      if newest is not None and newest != current]
        access_keys.audit(caller, "reload models", serving, "; ".join([f"sequence encoder: {sequence}", *not_loaded]))
        return RerankerState(serving, [_summary(m) for m in engine.rerankers.all()], sequence, not_loaded)

    @post("/reindex", opt={"scope": ADMIN}, sync_to_thread=True, summary="Re-encode everything with an encoder, then switch", status_code=202)
    def start_reindex(self, data: ReindexStart, engine: Engine, reindex_job: ReindexJob, access_keys: AccessKeys,
                      caller: Caller | None, settings: Settings, ingest_jobs: IngestJobs) -> ReindexState:
        if engine.shared:
            raise ClientException(status_code=409, detail=SHARED_REINDEX)

        def no_upload_running() -> None:  # its items would land in the collection being replaced
            if ingest_jobs.running:
                raise ClientException(status_code=409, detail="an upload is being ingested; start the reindex when "
                                                              "GET /v1/ingest/{job_id} says done",
                                      headers={"Retry-After": "30"})

        no_upload_running()  # checked again once the writes in flight have ended (one may start an upload)
        allowed = reindex_encoders(engine, settings)
        if data.encoder is None:
            path = engine.models.latest_accepted_encoder()
            if path is None:
                raise ClientException(detail="encoder: no accepted encoder under models/encoder; train one "
                                             "(hybridrec train encoder) or " + _naming(engine, settings),
                                      extra=[{"key": "encoder", "message": "no accepted encoder", "source": "body"}])
        elif data.encoder in allowed:
            path = allowed[data.encoder]
        else:
            # One answer for every name not allowed, whatever is at that path: no probing the disk.
            raise ClientException(detail="encoder: not an encoder this service may reindex with; "
                                         + _naming(engine, settings),
                                  extra=[{"key": "encoder", "message": "not an allowed encoder", "source": "body"}])

        state = reindex_job.start(engine, str(path), may_start=no_upload_running)
        access_keys.audit(caller, "start reindex", str(path))
        return state

    @get("/reindex", opt={"scope": ADMIN}, sync_to_thread=False, summary="State of the online reindex")
    def reindex_state(self, reindex_job: ReindexJob) -> ReindexState:
        return reindex_job.state

    @get("/models", opt={"scope": ADMIN}, sync_to_thread=True,
         summary="Trained rerankers and encoders, and which ones serve")
    def models(self, engine: Engine) -> ModelsState:
        current = engine.recommender.reranker
        encoders = [EncoderVersion(str(m["version"]), bool(m.get("accepted")), _text(m.get("reason")),
                                   _text(m.get("created")))
                    for m in engine.models.encoders.all()]
        sequences = [EncoderVersion(str(m["version"]), bool(m.get("accepted")), _text(m.get("reason")),
                                    _text(m.get("created")))
                     for m in engine.models.sequences.all()]
        sequence = engine.recommender.sources["sequence"].loaded
        return ModelsState(serving=current.version if current else None,
                           versions=[_summary(m) for m in engine.rerankers.all()], encoders=encoders,
                           serving_encoder=engine.encoder.name, sequences=sequences,
                           sequence=sequence.version if sequence else None)


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
            status_code=204, raises=[NotFoundException])
    def revoke_key(self, key_id: str, access_keys: AccessKeys, caller: Caller | None) -> None:
        admins = [k.id for k in access_keys.list() if ADMIN in k.scopes]
        if admins == [key_id]:
            # With no active key left, access control is off: anyone could read, write and reindex.
            raise ClientException(status_code=409, detail=f"{key_id} is the last active admin key: create another "
                                                          "admin key first (or revoke it with `hybridrec keys revoke` on "
                                                          "the server, which turns access control off)")
        if not access_keys.revoke(key_id):
            raise not_found("active API key", key_id)
        access_keys.audit(caller, "revoke key", key_id)

    @get("/audit", opt={"scope": ADMIN}, sync_to_thread=True, summary="Who did what: admin actions and forgotten users")
    def audit(self, access_keys: AccessKeys,
              limit: Annotated[int, Parameter(ge=1, le=1000, description="newest entries")] = 100) -> Audit:
        return Audit(access_keys.audit_log(limit))


def reindex_encoders(engine: Engine, settings: Settings) -> dict[str, Path]:
    """The encoders a reindex may name, by each name it is known by: every accepted version under
    ``models/encoder`` (its version, or its folder as the service writes it) and every folder of
    the ``reindex_encoders`` setting (as written there). Nothing else is looked at on disk."""
    allowed: dict[str, Path] = {}
    for meta in engine.models.encoders.all():
        if meta.get("accepted"):
            folder = engine.models.encoders.path(meta["version"])
            allowed[meta["version"]] = allowed[str(folder)] = folder
    for folder in settings.reindex_encoders:
        allowed[str(folder)] = folder
    return allowed


def _naming(engine: Engine, settings: Settings) -> str:
    """What a client may name instead, for an error."""
    versions = [meta["version"] for meta in engine.models.encoders.all() if meta.get("accepted")]
    folders = [str(folder) for folder in settings.reindex_encoders]
    return (f"name an accepted encoder version ({', '.join(versions) or 'none yet'}) or a folder of the "
            f"reindex_encoders setting, HYBRIDREC_REINDEX_ENCODERS ({', '.join(folders) or 'none set'})")


def _summary(meta: dict) -> dict:
    keys = ("version", "created", "accepted", "reason", "base_model", "ranker", "cross_encoder", "log_users",
            "train_users", "validation_users")
    return {k: meta.get(k) for k in keys}


def _text(value: object) -> str | None:
    return None if value is None else str(value)
