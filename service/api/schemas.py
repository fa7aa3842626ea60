"""Schemas more than one controller reads, and the input rules every route applies before its handler.

The rules themselves live in ``retrieval.storage.records`` (one id rule, one text rule); here they
are applied to what Litestar hands over and declared in the OpenAPI document, so that a value the
document calls valid is accepted and one it calls invalid is refused.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, SerializationException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter

from retrieval.limits import ID_MAX_CHARS, MAX_FILTER_VALUES, MAX_HISTORY, NAME_MAX_CHARS, TEXT_MAX_CHARS
from retrieval.storage.records import (
    ID_PATTERN,
    AttributeValue,
    InvalidRecord,
    check_id,
    check_name,
    check_text,
    convert_record,
)
from retrieval.storage.vector_store import ItemFilter

# Free text as the OpenAPI document states the text rule: no control characters but tabs and line breaks.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"

# An id in a body: the lengths are enforced by msgspec, the rest of the id rule by ``check_id`` in
# the struct's ``__post_init__`` (its message says which part failed); the pattern only documents it.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS,
                                 extra_json_schema={"extra": {"pattern": ID_PATTERN}})]
# A list of ids (a history), whose items the document describes as ids too.
Ids = Annotated[list[Id], msgspec.Meta(max_length=MAX_HISTORY, extra_json_schema={"extra": {"items": {
    "type": "string", "minLength": 1, "maxLength": ID_MAX_CHARS, "pattern": ID_PATTERN}}})]
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX_CHARS, extra_json_schema={"extra": {"pattern": TEXT_PATTERN}})]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX_CHARS)]

# Attribute values as msgspec's JSON schema says them (anyOf). Litestar writes a union as oneOf, and
# an integer is both an "integer" and a "number", so oneOf would call every integer attribute invalid.
Attributes = Annotated[dict[str, AttributeValue], msgspec.Meta(extra_json_schema={"extra": {
    "additional_properties": msgspec.json.schema(AttributeValue)}})]


def record_schema(kind: type) -> dict[str, Any]:
    """The JSON schema msgspec writes for a record (``additionalProperties: false`` where it refuses
    unknown fields, anyOf for unions): what a row of a batch looks like, where rows are judged one
    by one (``rejected``) instead of by the request's schema."""
    return msgspec.json.schema(kind)["$defs"][kind.__name__]


def path_id(description: str) -> Any:
    """A path parameter that is an id: ``check_request`` applies the id rule; the pattern documents it."""
    return Parameter(min_length=1, max_length=ID_MAX_CHARS, description=description,
                     schema_extra={"pattern": ID_PATTERN})


class Filters(msgspec.Struct, forbid_unknown_fields=True):
    """Hard filters: nothing outside them is returned. Matching is case-insensitive."""

    categories: Annotated[list[Name], msgspec.Meta(max_length=MAX_FILTER_VALUES)] | None = None
    brands: Annotated[list[Name], msgspec.Meta(max_length=MAX_FILTER_VALUES)] | None = None
    exclude_brands: Annotated[list[Name], msgspec.Meta(max_length=MAX_FILTER_VALUES)] | None = None
    price_min: float | None = None
    price_max: float | None = None

    def __post_init__(self) -> None:
        for field in ("categories", "brands", "exclude_brands"):
            names = getattr(self, field)
            if names is not None:
                setattr(self, field, [check_name(f"{field}[{i}]", name) for i, name in enumerate(names)])


def check_ids(field: str, values: list[str]) -> None:
    for i, value in enumerate(values):
        check_id(f"{field}[{i}]", value)


def check_query(query: str | None) -> None:
    if query is not None:
        check_text("query", query, TEXT_MAX_CHARS)


class ItemSummary(msgspec.Struct):
    """An item as lists show it."""

    id: str
    title: str
    score: float
    brand: str | None
    categories: list[str]
    price: float | None


def to_item_filter(filters: Filters | None) -> ItemFilter | None:
    if filters is None:
        return None
    return ItemFilter(
        categories=tuple(filters.categories or ()), brands=tuple(filters.brands or ()),
        exclude_brands=tuple(filters.exclude_brands or ()), price_min=filters.price_min, price_max=filters.price_max,
    )


def query_param(field: str, value: str | None, check) -> str | None:
    """A query parameter by its rule (an empty one is left out); 400 naming it."""
    if value is None or not value.strip():
        return None
    try:
        return check(field, value)
    except InvalidRecord as err:
        raise ValidationException(detail=str(err), extra=[{"key": field, "message": err.reason,
                                                           "source": "query"}]) from None


class UnsupportedMediaType(ClientException):
    status_code = 415


# A route that reads its body as a file of another format than JSON names the media types it takes
# in its ``opt`` under this key; ``check_request`` then checks the Content-Type against them only.
RAW_BODY = "raw_body_media_types"


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def check_request(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """A Litestar guard: what every route refuses before its handler runs. Litestar itself decodes
    any body as JSON whatever its declared type, and converts it loosely ("5" for a number), so:

    - a path parameter named ``*_id`` that breaks the id rule: 400 naming the parameter;
    - a body declared as anything but JSON: 415 (a body without a Content-Type is read as JSON);
    - a JSON body that fits the route's schema only by coercion: 400 naming the field;
    - on a route that takes a raw file (``opt[RAW_BODY]``), a body of another media type than those: 415.
    """
    for name, value in connection.path_params.items():
        if name.endswith("_id"):
            try:
                check_id(name, value)
            except InvalidRecord as err:
                raise ValidationException(detail=str(err),
                                          extra=[{"key": name, "message": err.reason, "source": "path"}]) from None
    content_type = connection.headers.get("content-type")
    raw_types = handler.opt.get(RAW_BODY)
    if raw_types is not None:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if content_type is not None and media_type not in raw_types:
            raise UnsupportedMediaType(
                detail=f"content-type: the body must be one of {', '.join(raw_types)}, not {content_type[:100]!r}",
                extra=[{"key": "content-type", "message": f"must be one of {', '.join(raw_types)}",
                        "source": "header"}])
        return
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            detail=f"content-type: the body must be JSON (application/json), not {content_type[:100]!r}",
            extra=[{"key": "content-type", "message": "must be application/json", "source": "header"}])
    if not await connection.body():  # type: ignore[attr-defined]  # an HTTP route's connection is a Request
        return  # Litestar answers a missing body
    try:
        raw = await connection.json()  # type: ignore[attr-defined]  # kept: Litestar reads this copy next
    except SerializationException as err:
        raise ClientException(detail=f"the body is not valid JSON: {err}") from None
    convert_record(raw, data.annotation)


class ClosedStructSchemas(StructSchemaPlugin):
    """Litestar's msgspec schemas, plus what its own plugin leaves out: a struct that refuses
    unknown fields (``forbid_unknown_fields``) says so with ``additionalProperties: false``. It
    extends that plugin (not exported publicly) so everything else stays as Litestar writes it."""

    def to_openapi_schema(self, field_definition, schema_creator):
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if msgspec.inspect.type_info(field_definition.type_).forbid_unknown_fields:
            schema.additional_properties = False
        return schema
