"""Schemas more than one controller reads."""

from __future__ import annotations

import msgspec

from retrieval.storage.vector_store import ItemFilter


class Filters(msgspec.Struct, forbid_unknown_fields=True):
    """Hard filters: nothing outside them is returned. Matching is case-insensitive."""

    categories: list[str] | None = None
    brands: list[str] | None = None
    exclude_brands: list[str] | None = None
    price_min: float | None = None
    price_max: float | None = None


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
