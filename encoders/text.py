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
