"""``/v1/recommendations``: the recommend pipeline over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post

from retrieval.recommender import MAX_K, RecommendRequest, Recommender
from retrieval.store import ItemFilter


class Filters(msgspec.Struct, forbid_unknown_fields=True):
    """Hard filters: nothing outside them is returned. Matching is case-insensitive."""

    categories: list[str] | None = None
    brands: list[str] | None = None
    price_min: float | None = None
    price_max: float | None = None


class RecommendationsPost(msgspec.Struct, forbid_unknown_fields=True):
    """Any of ``user_id``, ``query`` and ``history`` may be combined; none of them gives popular
    items. ``history`` is an ad-hoc list of item ids, oldest first (e.g. an anonymous session)."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    query: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    history: Annotated[list[str], msgspec.Meta(max_length=500)] = []
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 10
    filters: Filters | None = None
    exclude_seen: bool = True
    rerank: bool = True


class RecommendedItemOut(msgspec.Struct):
    id: str
    title: str
    score: float
    brand: str | None
    categories: list[str]
    price: float | None
    sources: dict[str, dict[str, float]]
    no_opinion: list[str]
    rerank: dict[str, float] | None = None


class Models(msgspec.Struct):
    encoder: str
    reranker: str | None


class RecommendationsOut(msgspec.Struct):
    items: list[RecommendedItemOut]
    sources: list[str]
    profile: str
    models: Models
    reranked: bool
    notes: list[str]
    took_ms: float


def to_item_filter(filters: Filters | None) -> ItemFilter | None:
    if filters is None:
        return None
    return ItemFilter(
        categories=tuple(filters.categories or ()), brands=tuple(filters.brands or ()),
        price_min=filters.price_min, price_max=filters.price_max,
    )


class RecommendationController(Controller):
    path = "/v1/recommendations"
    tags = ["recommendations"]

    @post("/", sync_to_thread=True, summary="Recommend items", status_code=200)
    def recommend(self, data: RecommendationsPost, recommender: Recommender) -> RecommendationsOut:
        result = recommender.recommend(RecommendRequest(
            user_id=data.user_id, query=data.query, history=list(data.history), k=data.k,
            item_filter=to_item_filter(data.filters), exclude_seen=data.exclude_seen, rerank=data.rerank,
        ))
        items = []
        for it in result.items:
            p: dict[str, Any] = it.payload
            items.append(RecommendedItemOut(
                id=it.id, title=p["title"], score=round(it.score, 8), brand=p.get("brand"),
                categories=p.get("categories") or [], price=p.get("price"),
                sources=it.trace["sources"], no_opinion=it.trace["no_opinion"], rerank=it.trace.get("rerank"),
            ))
        return RecommendationsOut(
            items=items, sources=result.sources, profile=result.profile,
            models=Models(encoder=recommender.catalogue.encoder.name, reranker=result.reranker),
            reranked=result.reranker is not None,
            notes=result.notes, took_ms=round(result.took_ms, 3),
        )
