"""``/v1/ingest``: upload a catalogue file (JSONL or CSV) and follow its ingest job: the batch job
behind ``hybridrec ingest``, run by the service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Literal

from litestar import Controller, Request, get, post
from litestar.exceptions import ClientException, NotFoundException, ValidationException
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import Parameter

from retrieval.engine import Engine
from retrieval.limits import NAME_MAX_CHARS
from retrieval.storage.records import check_name
from service.access import SECURITY, WRITE
from service.api.dependencies import IngestJobs, IngestState, ReindexJob
from service.api.errors import not_found
from service.api.schemas import RAW_BODY, UnsupportedMediaType, path_id, query_param
from service.settings import Settings

# What an uploaded file may be sent as, and the format each says (None: the format parameter or the name says).
MEDIA_TYPES = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl",
               "application/octet-stream": None, "text/plain": None}
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

@dataclass
class UploadOperation(Operation):
    """The upload's place in the OpenAPI document: its body is the file itself, in any of
    ``MEDIA_TYPES`` (the handler reads it raw, so Litestar cannot describe it)."""

    def __post_init__(self) -> None:
        schema = Schema(type="string", format="binary")  # type: ignore[arg-type]
        self.request_body = RequestBody(
            content={media_type: OpenAPIMediaType(schema=schema) for media_type in MEDIA_TYPES}, required=True,
            description="the file as it is: JSONL (one item per line) or CSV (a header row of id, title, "
                        "description, brand, categories, price, attributes.<name>; categories separated by |)")


class Busy(ClientException):
    """409: an upload is being ingested, or a reindex runs."""

    status_code = 409


JobId = Annotated[str, path_id("the ingest job's id, from POST /v1/ingest")]


def upload_format(fmt: str | None, name: str, content_type: str | None) -> str:
    """The file's format: the ``format`` parameter, else what the Content-Type or the name's suffix says."""
    if fmt is not None:
        return fmt
    said = MEDIA_TYPES.get((content_type or "").split(";", 1)[0].strip().lower())
    said = said or SUFFIXES.get(PurePath(name).suffix.lower())
    if said is None:
        raise ValidationException(detail="format: cannot tell the file's format; pass format=jsonl or format=csv",
                                  extra=[{"key": "format", "message": "jsonl or csv", "source": "query"}])
    return said


class IngestController(Controller):
    path = "/v1/ingest"
    tags = ["items"]
    security = SECURITY

    @post("/", opt={"scope": WRITE, RAW_BODY: tuple(MEDIA_TYPES)}, sync_to_thread=True, status_code=202,
          summary="Upload a catalogue file (JSONL or CSV) to ingest in the background",
          raises=[UnsupportedMediaType, Busy, ValidationException], operation_class=UploadOperation)
    def upload(
        self, request: Request, body: bytes, engine: Engine, settings: Settings, ingest_jobs: IngestJobs,
        reindex_job: ReindexJob,
        format: Annotated[Literal["jsonl", "csv"] | None,
                          Parameter(description="jsonl or csv; default: what the Content-Type or the name says")] = None,
        name: Annotated[str | None, Parameter(max_length=NAME_MAX_CHARS,
                                              description="the file's name, to know the job by")] = None,
    ) -> IngestState:
        """The body is saved under the data directory's ``uploads/`` and loaded batch by batch by the
        same job as ``hybridrec ingest``: every row is written or rejected with its line and reason
        (``GET /v1/ingest/{job_id}``). One upload is ingested at a time (409 while one runs), and
        none while a reindex runs (409). At most ``max_body_bytes`` (413 above)."""
        label = query_param("name", name, check_name)
        fmt = upload_format(format, label or "", request.headers.get("content-type"))
        with reindex_job.writing():  # the job is running before a reindex can start and see it
            return ingest_jobs.start(engine.catalogue, body, fmt, label or f"upload.{fmt}")

    @get("/{job_id:str}", opt={"scope": WRITE}, sync_to_thread=False, summary="An upload's ingest job: progress, "
                                                                               "rejected rows", raises=[NotFoundException])
    def job(self, job_id: JobId, ingest_jobs: IngestJobs) -> IngestState:
        state = ingest_jobs.get(job_id)
        if state is None:
            raise not_found("ingest job", job_id)
        return state
