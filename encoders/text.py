"""Rendering items as the text the encoders read.

One function, used for ingestion, for similar-item queries and for evaluation, so an item is
always encoded the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# MiniLM reads at most 256 word pieces; descriptions beyond this many characters only cost time.
DESCRIPTION_CHARS = 400


def item_text(item: Mapping[str, Any]) -> str:
    """Render an item (a mapping with title/brand/categories/description) as one string.

    >>> item_text({"title": "Mini stapler", "brand": "Swingline", "categories": ["Staplers"]})
    'Mini stapler. Brand: Swingline. Category: Staplers.'
    """
    parts = [str(item.get("title") or "").strip().rstrip(".") + "."]
    brand = item.get("brand")
    if brand:
        parts.append(f"Brand: {brand}.")
    categories = item.get("categories") or []
    if categories:
        parts.append("Category: " + ", ".join(categories) + ".")
    description = str(item.get("description") or "").strip()
    if description:
        parts.append(description[:DESCRIPTION_CHARS])
    return " ".join(parts)


CANDIDATE_DESCRIPTION_CHARS = 200


def candidate_text(item: Mapping[str, Any]) -> str:
    """The document side of a reranker pair: the item, with a shorter description than
    ``item_text`` so that context and candidate both fit the cross-encoder's window."""
    return item_text({**item, "description": str(item.get("description") or "")[:CANDIDATE_DESCRIPTION_CHARS]})


def context_text(recent: list[Mapping[str, Any]], query: str | None = None, preferences: str | None = None,
                 max_items: int = 5) -> str:
    """The query side of a reranker pair: what the user asked for, what they said they like, and
    their most recent items, newest first.

    >>> context_text([{"title": "Gel pen", "categories": ["Office", "Pens"]}], query="refills")
    'Looking for: refills. Recently: Gel pen (Pens).'
    """
    parts = []
    if query:
        parts.append(f"Looking for: {query.strip().rstrip('.')}.")
    if preferences:
        parts.append(f"Likes: {preferences.strip().rstrip('.')}.")
    if recent:
        shown = []
        for item in recent[:max_items]:
            leaf = (item.get("categories") or [None])[-1]
            shown.append(f"{item.get('title', '').strip()}" + (f" ({leaf})" if leaf else ""))
        parts.append("Recently: " + " | ".join(shown) + ".")
    return " ".join(parts)
