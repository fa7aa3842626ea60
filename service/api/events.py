"""``/v1/events``: what users did. Durable before the response; reflected by the next request."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.exceptions import ServiceUnavailableException

from retrieval.state.event_writer import EventWriter, WriterBusy
from retrieval.storage.records import EVENT_TYPES, Event
from service.access import SECURITY, WRITE
from service.api.errors import invalid_record
from service.api.schemas import UnsupportedMediaType, record_schema
from service.observability import EVENTS
from service.settings import Settings


class EventsPost(msgspec.Struct, forbid_unknown_fields=True):
    """Events to record. Each: ``user_id``, ``type`` (view|click|add_to_cart|purchase|like|dislike|
    rating|search), ``item_id`` (all but search), ``value`` (rating 1..5), ``query`` (search),
    ``timestamp`` (ISO-8601, default now), ``event_id`` (optional, the client's own id: an event sent
    again with the same user and id is counted in ``duplicates`` and logged once, so a request
    whose answer was lost can be retried safely). Invalid rows and unknown item ids are rejected."""

    events: Annotated[list[Any], msgspec.Meta(extra_json_schema={"extra": {"items": record_schema(Event)}})]


class RejectedEvent(msgspec.Struct):
    index: int
    user_id: str | None
    error: str


class EventsResult(msgspec.Struct):
    accepted: int
    rejected: list[RejectedEvent]
    # Events whose event_id the user had logged already (a retry): not logged again, not an error.
    duplicates: int = 0


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = SECURITY

    @post("/", opt={"scope": WRITE}, summary="Record user events", status_code=200, raises=[UnsupportedMediaType])
    async def record(self, data: EventsPost, event_writer: EventWriter, settings: Settings) -> EventsResult:
        """Answers once the events are durable; concurrent requests share one commit."""
        if len(data.events) > settings.max_batch:
            raise invalid_record("events", f"at most {settings.max_batch} events per request")
        try:
            report = await asyncio.wrap_future(event_writer.submit(data.events))
        except WriterBusy as busy:
            raise ServiceUnavailableException(detail=f"{busy}; retry after a second",
                                              headers={"Retry-After": "1"}) from None
        rejected, repeated = {r.index for r in report.rejected}, set(report.duplicate_rows)
        for n, row in enumerate(data.events):
            kind = row.get("type") if isinstance(row, dict) and row.get("type") in EVENT_TYPES else "unknown"
            EVENTS.labels(kind, "rejected" if n in rejected else "duplicate" if n in repeated else "accepted").inc()
        return EventsResult(report.accepted, [RejectedEvent(r.index, r.id, r.error) for r in report.rejected],
                            report.duplicates)
