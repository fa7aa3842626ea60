"""One error shape for every 4xx: ``{"status_code", "detail", "extra": [{"key", "message"}]}``.

It is Litestar's own validation-error shape, so an engine-side error (a bad field found past
schema validation) reads the same as a schema error. An unexpected exception is a 500 in the same
shape; its traceback goes to the ``hybridrec.service`` log under the request id, never to the client.
"""

from __future__ import annotations

import json
import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from retrieval.storage.records import InvalidRecord
from service.observability import assign_request_id, log_request

log = logging.getLogger("hybridrec.service")


def invalid_record(field: str | None, reason: str) -> ValidationException:
    return ValidationException(
        detail=f"{field}: {reason}" if field else reason,
        extra=[{"key": field, "message": reason, "source": "body"}],
    )


def not_found(kind: str, ident: str) -> NotFoundException:
    return NotFoundException(detail=f"{kind} {ident!r} not found")


def request_id(request: Request) -> str:
    """The request's id (``service.observability.RequestLog``), which every error body repeats; one
    is made for a request no middleware saw (no such route: 404, 405)."""
    return request.scope.get("state", {}).get("request_id") or assign_request_id(request.scope)


def invalid_record_handler(request: Request, exc: InvalidRecord) -> Response:
    err = invalid_record(exc.field, exc.reason)
    return Response({"status_code": 400, "detail": err.detail, "extra": err.extra, "request_id": request_id(request)},
                    status_code=400)


def too_deep_handler(request: Request, exc: RecursionError) -> Response:
    """A body nested so deep that decoding it recursed past Python's limit: the client's error."""
    err = invalid_record(None, "the request body is nested too deeply to be read")
    return Response({"status_code": 400, "detail": err.detail, "extra": err.extra, "request_id": request_id(request)},
                    status_code=400)


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    if exc.status_code == 413:
        detail = (f"the request body is larger than {request.app.request_max_body_size} bytes: send smaller batches, "
                  "use `hybridrec ingest` for bulk loads, or raise HYBRIDREC_MAX_BODY_BYTES")
    body = {"status_code": exc.status_code, "detail": detail}
    if exc.extra:
        body["extra"] = exc.extra
    unrouted = not request.scope.get("state", {}).get("request_id")  # no middleware saw it (404, 405)
    body["request_id"] = request_id(request)
    if unrouted:
        log_request(request.scope, body["request_id"], exc.status_code, None)
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def internal_error_handler(request: Request, exc: Exception) -> Response:
    """An exception nothing expected: the operator gets its traceback, the client the request id
    to quote (the exception's text may hold paths or data, so it stays in the log)."""
    rid = request_id(request)
    log.error(json.dumps({"request_id": rid, "method": request.method,
                          "route": request.scope.get("path_template") or request.url.path,
                          "error": type(exc).__name__}),
              exc_info=(type(exc), exc, exc.__traceback__))
    return Response({"status_code": 500, "detail": f"internal server error; the service's log has what went wrong "
                                                   f"under request_id {rid}", "request_id": rid}, status_code=500)
