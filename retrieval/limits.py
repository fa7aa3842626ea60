"""Every per-field limit of the engine's inputs, in one place: the records, the recommend pipeline
and the HTTP schemas all read them from here (the README's limits table lists them)."""

from __future__ import annotations

ID_MAX_CHARS = 256  # item and user ids
TITLE_MAX_CHARS = 1000
DESCRIPTION_MAX_CHARS = 50_000
TEXT_MAX_CHARS = 2000  # a search query, a sentence of stated preferences
NAME_MAX_CHARS = 200  # a brand, a category, an attribute's name
MAX_CATEGORIES = 20  # categories per item
MAX_ATTRIBUTES = 64  # attributes per item or user: with the two lengths, at most about 77,000 characters
ATTRIBUTE_VALUE_MAX_CHARS = 1000  # an attribute's text value
MAX_FILTER_VALUES = 100  # categories or brands named in one filter list
MAX_K = 100  # items one recommendation may ask for
MAX_HISTORY = 500  # item ids in a request's ad-hoc history
MAX_BATCH = 1000  # rows per PUT /v1/items or POST /v1/events (the default of ``max_batch``)
MAX_BODY_BYTES = 16 * 1024 * 1024  # one HTTP request's body (the default of ``max_body_bytes``)
MAX_EVENTS_PER_USER = 100_000  # events the log keeps for one user (a profile reads the newest 200)

LIMITS = (
    ("id", ID_MAX_CHARS, "characters in an item or user id (no `/`, no control characters, no space at either end)"),
    ("title", TITLE_MAX_CHARS, "characters in an item title (free text: no control characters but tabs and line breaks)"),
    ("description", DESCRIPTION_MAX_CHARS, "characters in an item description"),
    ("query / preferences", TEXT_MAX_CHARS, "characters in a query or a sentence of stated preferences"),
    ("name", NAME_MAX_CHARS, "characters in a brand, a category or an attribute's name"),
    ("categories", MAX_CATEGORIES, "categories per item"),
    ("attributes", MAX_ATTRIBUTES, "attributes per item or user"),
    ("attribute value", ATTRIBUTE_VALUE_MAX_CHARS,
     "characters in an attribute's text value (a number: a 64-bit integer or a finite float)"),
    ("filter values", MAX_FILTER_VALUES, "categories or brands in one list of a recommendation's `filters`"),
    ("k", MAX_K, "items per recommendation"),
    ("history", MAX_HISTORY, "item ids in a request's ad-hoc history"),
    ("batch", MAX_BATCH, "rows per item or event write (HYBRIDREC_MAX_BATCH; use `hybridrec ingest` for more)"),
    ("body", MAX_BODY_BYTES, "bytes in one request body (HYBRIDREC_MAX_BODY_BYTES; 413 above it)"),
    ("events per user", MAX_EVENTS_PER_USER, "events the log accepts for one user; further events are rejected "
                                             "with a reason (forgetting the user starts over)"),
)


def limits_table() -> str:
    """The limits as the README's markdown table (a test keeps the README's copy current)."""
    rows = ["| what | at most | meaning |", "|---|---:|---|"]
    rows += [f"| {name} | {value:,} | {meaning} |" for name, value, meaning in LIMITS]
    return "\n".join(rows)
