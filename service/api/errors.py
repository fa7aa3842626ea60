"""One error shape for every 4xx: ``{"status_code", "detail", "extra": [{"key", "message"}]}``.

It is Litestar's own validation-error shape, so an engine-side error (a bad field found past
schema validation) reads the same as a schema error.
"""

from __future__ import annotations

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from retrieval.storage.records import InvalidRecord


def invalid_record(field: str | None, reason: str) -> ValidationException:
    return ValidationException(
        detail=f"{field}: {reason}" if field else reason,
        extra=[{"key": field, "message": reason, "source": "body"}],
    )


def not_found(kind: str, ident: str) -> NotFoundException:
    return NotFoundException(detail=f"{kind} {ident!r} not found")


def invalid_record_handler(request: Request, exc: InvalidRecord) -> Response:
    err = invalid_record(exc.field, exc.reason)
    return Response({"status_code": 400, "detail": err.detail, "extra": err.extra}, status_code=400)


def http_error_handler(request: Request, exc: HTTPException) -> Response:
    body = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)
