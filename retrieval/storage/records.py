"""Validated records the engine accepts: items and events.

The API, the ingest job and the evaluation all go through these parsers, so a row is judged the
same way wherever it comes from. Errors name the field and the reason.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec

from retrieval.limits import DESCRIPTION_MAX_CHARS, ID_MAX_CHARS, TEXT_MAX_CHARS, TITLE_MAX_CHARS

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "like", "dislike", "rating", "search")
_ID_NAMESPACE = uuid.UUID("5f1e2a10-7c1b-4b7e-9a57-3f9c3e0d2b61")
_NAMED_FIELD = re.compile(r"(?:missing required|contains unknown) field `(?P<field>[^`]*)`")
_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?:\.(?P<path>[^`]*))?`)?$")


class InvalidRecord(ValueError):
    """A record that cannot be accepted: ``field`` says where, the message says why."""

    def __init__(self, field: str | None, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


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
    attributes: dict[str, str | int | float | bool] = {}

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


class ParsedEvent(msgspec.Struct, frozen=True):
    """An accepted event with its time resolved to seconds since the epoch (UTC)."""

    user_id: str
    type: str
    item_id: str | None
    value: float | None
    query: str | None
    timestamp: float


def _from_msgspec(err: msgspec.ValidationError) -> InvalidRecord:
    match = _AT_PATH.match(str(err))
    reason = match.group("reason") if match else str(err)
    path = match.group("path") if match else None
    reason = reason[0].lower() + reason[1:] if reason else reason
    named = _NAMED_FIELD.search(reason)
    if named:
        # "Object missing required field `title`" names the field inside the reason; lift it out.
        field = named.group("field")
        path = f"{path}.{field}" if path else field
        reason = "is required" if "missing" in reason else "is not a known field"
    return InvalidRecord(path, reason)


def _check_id(field: str, value: str) -> None:
    if not value or not value.strip():
        raise InvalidRecord(field, "must be a non-empty string")
    if len(value) > ID_MAX_CHARS:
        raise InvalidRecord(field, f"longer than {ID_MAX_CHARS} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidRecord(field, "contains control characters")


def _convert(raw: Any, kind: type, strict: bool) -> Any:
    """A JSON object as ``kind``, or InvalidRecord naming the bad field."""
    if not isinstance(raw, dict):
        raise InvalidRecord(None, f"expected an object, got {type(raw).__name__}")
    try:
        return msgspec.convert(raw, kind, strict=strict)
    except msgspec.ValidationError as err:
        raise _from_msgspec(err) from None


def parse_item(raw: Any) -> Item:
    """Validate one raw item (a JSON object); raise InvalidRecord naming the bad field."""
    item = _convert(raw, Item, strict=True)
    _check_id("id", item.id)
    item.title = item.title.strip()
    if not item.title:
        raise InvalidRecord("title", "must be a non-empty string")
    if len(item.title) > TITLE_MAX_CHARS:
        raise InvalidRecord("title", f"longer than {TITLE_MAX_CHARS} characters")
    if len(item.description) > DESCRIPTION_MAX_CHARS:
        raise InvalidRecord("description", f"longer than {DESCRIPTION_MAX_CHARS} characters")
    if item.brand is not None:
        item.brand = item.brand.strip() or None
    cleaned = []
    for i, category in enumerate(item.categories):
        if not category.strip():
            raise InvalidRecord(f"categories[{i}]", "must be a non-empty string")
        if category.strip() not in cleaned:
            cleaned.append(category.strip())
    item.categories = cleaned
    if item.price is not None:
        if not math.isfinite(item.price) or item.price < 0:
            raise InvalidRecord("price", "must be a finite number >= 0")
        item.price = float(item.price)
    return item


def parse_timestamp(value: str | float | None, now: float) -> float:
    """ISO-8601 (naive means UTC) or epoch seconds; None means now."""
    if value is None:
        return now
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise InvalidRecord("timestamp", "must be a non-negative epoch time or an ISO-8601 string")
        return float(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRecord("timestamp", f"{value!r} is not an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = moment.timestamp()
    if seconds > now + 86400:
        raise InvalidRecord("timestamp", "is more than a day in the future")
    return seconds


def parse_event(raw: Any, now: float) -> ParsedEvent:
    """Validate one raw event; the caller checks that ``item_id`` exists in the catalogue."""
    event = _convert(raw, Event, strict=False)
    _check_id("user_id", event.user_id)
    if event.type not in EVENT_TYPES:
        raise InvalidRecord("type", f"{event.type!r} is not one of {', '.join(EVENT_TYPES)}")
    if event.type == "search":
        if not event.query or not event.query.strip():
            raise InvalidRecord("query", "a search event needs non-empty query text")
        if len(event.query) > TEXT_MAX_CHARS:
            raise InvalidRecord("query", f"longer than {TEXT_MAX_CHARS} characters")
    elif event.item_id is None:
        raise InvalidRecord("item_id", f"a {event.type} event needs an item_id")
    if event.item_id is not None:
        _check_id("item_id", event.item_id)
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
        query=event.query.strip() if event.query else None,
        timestamp=parse_timestamp(event.timestamp, now),
    )
