"""Validated records the engine accepts: items, events and stated preferences.

The API, the ingest job and the evaluation all go through these parsers, so a row is judged the
same way wherever it comes from. Errors name the field and the reason. Two rules hold for every
field, in a body or in a path: the id rule (``check_id``) and the text rule (``check_text``).
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec

from retrieval.limits import (
    ATTRIBUTE_VALUE_MAX_CHARS,
    DESCRIPTION_MAX_CHARS,
    ID_MAX_CHARS,
    MAX_ATTRIBUTES,
    MAX_CATEGORIES,
    NAME_MAX_CHARS,
    TEXT_MAX_CHARS,
    TITLE_MAX_CHARS,
)

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "like", "dislike", "rating", "search")
_ID_NAMESPACE = uuid.UUID("5f1e2a10-7c1b-4b7e-9a57-3f9c3e0d2b61")
_NAMED_FIELD = re.compile(r"(?:missing required|contains unknown) field `(?P<field>[^`]*)`")
_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?:\.(?P<path>[^`]*))?`)?$", re.DOTALL)
# Unicode category Cc: C0, DEL and C1. Never in an id or a name; free text keeps tabs and line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# The id rule as a regular expression, for the OpenAPI document (``check_id`` says which part failed).
ID_PATTERN = r"^(?!\.\.?$)[^\s/\x00-\x1f\x7f-\x9f](?:[^/\x00-\x1f\x7f-\x9f]*[^\s/\x00-\x1f\x7f-\x9f])?$"
# Integer attributes round-trip through the vector store's payload only within 64 bits.
_INT64 = (-(2**63), 2**63 - 1)
FUTURE_SLACK_SECONDS = 86400  # clocks differ; a timestamp further ahead than this is a mistake

AttributeValue = str | int | float | bool


class InvalidRecord(ValueError):
    """A record that cannot be accepted: ``field`` says where, the message says why."""

    def __init__(self, field: str | None, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


@functools.lru_cache(maxsize=100_000)  # a request's exclusions name hundreds of seen items, each a uuid5
def point_id(external_id: str) -> str:
    """Deterministic store id for an external id, so every write is an idempotent upsert."""
    return str(uuid.uuid5(_ID_NAMESPACE, external_id))


class Item(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A catalogue item as clients send it."""

    id: str
    title: str
    description: str = ""
    brand: str | None = None
    categories: list[str] = []
    price: float | None = None
    attributes: dict[str, AttributeValue] = {}

    def payload(self) -> dict[str, Any]:
        """What the items collection stores: the item plus lower-cased keys that filters match on."""
        body = msgspec.structs.asdict(self)
        body["brand_key"] = self.brand.lower() if self.brand else None
        body["category_keys"] = [c.lower() for c in self.categories]
        return body


class Event(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A user event as clients send it."""

    user_id: str
    type: str
    item_id: str | None = None
    value: float | None = None
    query: str | None = None
    timestamp: str | float | None = None
    # The client's own id for the event: sent again (a retry after a lost answer), it is logged once.
    event_id: str | None = None


class ParsedEvent(msgspec.Struct, frozen=True):
    """An accepted event with its time resolved to seconds since the epoch (UTC)."""

    user_id: str
    type: str
    item_id: str | None
    value: float | None
    query: str | None
    timestamp: float
    event_id: str | None = None  # unique per user where given


def _from_msgspec(err: msgspec.ValidationError) -> InvalidRecord:
    match = _AT_PATH.match(str(err))
    reason = match.group("reason") if match else str(err)
    path = match.group("path") if match else None
    if isinstance(err.__cause__, InvalidRecord):
        # A struct's own check (``__post_init__``) failed: its field, under the struct's path.
        inner = err.__cause__
        field = f"{path}.{inner.field}" if path and inner.field else (inner.field or path)
        return InvalidRecord(field, inner.reason)
    reason = reason[0].lower() + reason[1:] if reason else reason
    named = _NAMED_FIELD.search(reason)
    if named:
        # "Object missing required field `title`" names the field inside the reason; lift it out.
        field = named.group("field")
        path = f"{path}.{field}" if path else field
        reason = "is required" if "missing" in reason else "is not a known field"
    return InvalidRecord(path, reason)


def check_id(field: str, value: str) -> str:
    """The one id rule, for item and user ids in bodies and in paths alike: 1 to ID_MAX_CHARS
    characters, no control characters, no ``/`` (a path segment could not hold it, so such an id
    could never be read or deleted), not ``.`` or ``..`` (a URL path drops them), and no whitespace
    at either end (ids compare exactly, and " a" would look like "a"). Returns the value; raises
    InvalidRecord naming ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRecord(field, "must be a non-empty string")
    if len(value) > ID_MAX_CHARS:
        raise InvalidRecord(field, f"longer than {ID_MAX_CHARS} characters")
    if _CONTROL.search(value):
        raise InvalidRecord(field, "contains control characters")
    if "/" in value:
        raise InvalidRecord(field, "contains '/', which a URL path cannot carry")
    if value in (".", ".."):
        raise InvalidRecord(field, f"is {value!r}, which browsers and proxies remove from a URL path")
    if value != value.strip():
        raise InvalidRecord(field, "starts or ends with whitespace")
    return value


def check_text(field: str, value: str, max_chars: int) -> str:
    """The one text rule, for free text (titles, descriptions, queries, preferences): at most
    ``max_chars`` characters and no control characters but tabs and line breaks."""
    if len(value) > max_chars:
        raise InvalidRecord(field, f"longer than {max_chars} characters")
    if _TEXT_CONTROL.search(value):
        raise InvalidRecord(field, "contains control characters (only tabs and line breaks are allowed)")
    return value


def check_name(field: str, value: str) -> str:
    """A name (a brand, a category, an attribute's name): one line of text, stripped, non-empty."""
    value = value.strip()
    if not value:
        raise InvalidRecord(field, "must be a non-empty string")
    if len(value) > NAME_MAX_CHARS:
        raise InvalidRecord(field, f"longer than {NAME_MAX_CHARS} characters")
    if _CONTROL.search(value):
        raise InvalidRecord(field, "contains control characters")
    return value


def check_attributes(field: str, attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    """An item's or a user's attributes: at most MAX_ATTRIBUTES, each name a name, each value
    short text, a 64-bit integer, a finite number or a boolean. Names are kept as given."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidRecord(field, f"more than {MAX_ATTRIBUTES} attributes")
    for name, value in attributes.items():
        try:
            if check_name(field, name) != name:
                raise InvalidRecord(field, "starts or ends with whitespace")
        except InvalidRecord as err:
            raise InvalidRecord(field, f"the name {name[:40]!r} {err.reason}") from None
        where = f"{field}.{name}"
        if isinstance(value, str):
            check_text(where, value, ATTRIBUTE_VALUE_MAX_CHARS)
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise InvalidRecord(where, "an integer must fit in 64 bits (use a string for larger numbers)")
        elif not math.isfinite(value):
            raise InvalidRecord(where, "must be a finite number")
    return attributes


def convert_record(raw: Any, kind: type) -> Any:
    """A JSON object as ``kind``, converted strictly: a value the type does not declare, such as
    "5" for a number, is refused, never coerced. Raises InvalidRecord naming the bad field."""
    if not isinstance(raw, dict):
        raise InvalidRecord(None, f"expected an object, got {type(raw).__name__}")
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as err:
        raise _from_msgspec(err) from None


def stored_item(payload: dict[str, Any]) -> Item:
    """An item as the store holds it (its payload), not judged again: an item accepted under an
    earlier version's rules stays what it is when the catalogue is re-encoded."""
    return msgspec.convert({k: payload[k] for k in Item.__struct_fields__ if k in payload}, Item, strict=False)


def parse_item(raw: Any) -> Item:
    """Validate one raw item (a JSON object); raise InvalidRecord naming the bad field."""
    item = convert_record(raw, Item)
    check_id("id", item.id)
    item.title = check_text("title", item.title.strip(), TITLE_MAX_CHARS)
    if not item.title:
        raise InvalidRecord("title", "must be a non-empty string")
    check_text("description", item.description, DESCRIPTION_MAX_CHARS)
    if item.brand is not None:
        item.brand = check_name("brand", item.brand) if item.brand.strip() else None
    if len(item.categories) > MAX_CATEGORIES:
        raise InvalidRecord("categories", f"more than {MAX_CATEGORIES} categories")
    cleaned = []
    for i, category in enumerate(item.categories):
        category = check_name(f"categories[{i}]", category)
        if category not in cleaned:
            cleaned.append(category)
    item.categories = cleaned
    if item.price is not None:
        if not math.isfinite(item.price) or item.price < 0:
            raise InvalidRecord("price", "must be a finite number >= 0")
        item.price = float(item.price)
    check_attributes("attributes", item.attributes)
    return item


def parse_preferences(preferences: str | None, attributes: dict[str, AttributeValue]
                      ) -> tuple[str | None, dict[str, AttributeValue]]:
    """A user's stated preferences (free text, stripped; empty means none) and attributes."""
    if preferences is not None:
        preferences = check_text("preferences", preferences.strip(), TEXT_MAX_CHARS) or None
    return preferences, check_attributes("attributes", attributes)


def parse_timestamp(value: str | float | None, now: float) -> float:
    """ISO-8601 (naive means UTC) or epoch seconds; None means now. Either form must be at or after
    the epoch and at most a day ahead of ``now``."""
    if value is None:
        return now
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise InvalidRecord("timestamp", "must be a non-negative epoch time or an ISO-8601 string")
        seconds = float(value)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seconds = moment.timestamp()
        except (ValueError, OverflowError):
            raise InvalidRecord("timestamp", f"{value[:64]!r} is not an ISO-8601 date-time") from None
        if seconds < 0:
            raise InvalidRecord("timestamp", "is before 1970-01-01")
    if seconds > now + FUTURE_SLACK_SECONDS:
        raise InvalidRecord("timestamp", "is more than a day in the future")
    return seconds


def parse_event(raw: Any, now: float) -> ParsedEvent:
    """Validate one raw event; the caller checks that ``item_id`` exists in the catalogue."""
    event = convert_record(raw, Event)
    check_id("user_id", event.user_id)
    if event.type not in EVENT_TYPES:
        raise InvalidRecord("type", f"{event.type[:64]!r} is not one of {', '.join(EVENT_TYPES)}")
    query = None
    if event.query is not None:
        query = check_text("query", event.query.strip(), TEXT_MAX_CHARS) or None
    if event.type == "search":
        if query is None:
            raise InvalidRecord("query", "a search event needs non-empty query text")
    elif event.item_id is None:
        raise InvalidRecord("item_id", f"a {event.type} event needs an item_id")
    if event.item_id is not None:
        check_id("item_id", event.item_id)
    if event.value is not None and not math.isfinite(event.value):
        raise InvalidRecord("value", "must be a finite number")
    if event.type == "rating":
        if event.value is None or not 1 <= event.value <= 5:
            raise InvalidRecord("value", "a rating event needs a value between 1 and 5")
    return ParsedEvent(
        user_id=event.user_id,
        type=event.type,
        item_id=event.item_id,
        value=event.value,
        query=query,
        timestamp=parse_timestamp(event.timestamp, now),
        event_id=check_id("event_id", event.event_id) if event.event_id is not None else None,
    )
