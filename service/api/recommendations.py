"""``/v1/recommendations``: the recommend pipeline over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post

from prompts import Generator
from retrieval.limits import MAX_K
from retrieval.pipeline.fusion import SourceRank
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import DiversityTrace, RecommendRequest, RerankTrace
from retrieval.storage.records import check_id
from service.access import READ, SECURITY
from service.api.schemas import (
    Filters,
    Id,
    Ids,
    ItemSummary,
    Text,
    UnsupportedMediaType,
    check_ids,
    check_query,
    to_item_filter,
)
from service.explanation import explain_item
from service.observability import PIPELINE_STEP_SECONDS


class RecommendationsPost(msgspec.Struct, forbid_unknown_fields=True):
    """Any of ``user_id``, ``query`` and ``history`` may be combined; none of them gives popular
    items. ``history`` is an ad-hoc list of item ids, oldest first (e.g. an anonymous session).
    ``query`` may be a sentence: its constraints ("under $15", "not from Avery") and anchor item
    ("like <title> but cheaper") are enforced, and ``interpreted`` in the response says how it was
    read. ``diversity`` 0..1 trades relevance for variety (MMR); ``max_per_category`` caps each
    category; ``explain`` adds a grounded explanation to every item."""

    user_id: Id | None = None
    query: Text | None = None
    history: Ids = []
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 10
    filters: Filters | None = None
    exclude_seen: bool = True
    rerank: bool = True
    # Litestar drops a bound of 0 from the document (it reads 0 as unset), so the minimum is said again.
    diversity: Annotated[float, msgspec.Meta(ge=0, le=1, extra_json_schema={"extra": {"minimum": 0}})] | None = None
    max_per_category: Annotated[int, msgspec.Meta(ge=1)] | None = None
    explain: bool = False
    understand_query: bool = True

    def __post_init__(self) -> None:
        if self.user_id is not None:
            check_id("user_id", self.user_id)
        check_query(self.query)
        check_ids("history", self.history)


class RecommendedItemOut(ItemSummary):
    sources: dict[str, SourceRank]  # each source's rank, score and contribution to the fused score
    no_opinion: list[str]  # sources that could not judge the item (no one has taken it yet)
    rerank: RerankTrace | None = None
    diversity: DiversityTrace | None = None
    explanation: dict[str, Any] | None = None


class Models(msgspec.Struct):
    encoder: str
    reranker: str | None
    sequence: str | None = None  # the sequence encoder version whose source answered, if one did


class RecommendationsOut(msgspec.Struct):
    items: list[RecommendedItemOut]
    sources: list[str]
    profile: str
    models: Models
    reranked: bool
    notes: list[str]
    took_ms: float
    interpreted: dict[str, Any] | None = None


class RecommendationController(Controller):
    path = "/v1/recommendations"
    tags = ["recommendations"]
    security = SECURITY

    @post("/", opt={"scope": READ}, sync_to_thread=True, summary="Recommend items", status_code=200,
          raises=[UnsupportedMediaType])
    def recommend(self, data: RecommendationsPost, recommender: Recommender,
                  explanation_generator: Generator) -> RecommendationsOut:
        req = RecommendRequest(
            user_id=data.user_id, query=data.query, history=list(data.history), k=data.k,
            item_filter=to_item_filter(data.filters), exclude_seen=data.exclude_seen, rerank=data.rerank,
            diversity=data.diversity, max_per_category=data.max_per_category, understand_query=data.understand_query,
        )
        result = recommender.recommend(req)
        for step, seconds in result.timings.items():
            PIPELINE_STEP_SECONDS.labels(step).observe(seconds)
        understood = recommender.understand(req) if data.explain else None  # parsed once, for every item
        items = []
        for rank, it in enumerate(result.items, start=1):
            p: dict[str, Any] = it.payload
            explanation = None
            if data.explain:
                # The item's own trace from this very ranking; the counterfactual is left to
                # /v1/explanations, which re-runs the pipeline for one item.
                explanation = explain_item(recommender, explanation_generator, req, it.id, trace=it.trace, rank=rank,
                                           counterfactual=False, understood=understood)
            items.append(RecommendedItemOut(
                id=it.id, title=p["title"], score=round(it.score, 8), brand=p.get("brand"),
                categories=p.get("categories") or [], price=p.get("price"),
                sources=it.trace.sources, no_opinion=it.trace.no_opinion, rerank=it.trace.rerank,
                diversity=it.trace.diversity, explanation=explanation,
            ))
        return RecommendationsOut(
            items=items, sources=result.sources, profile=result.profile,
            models=Models(encoder=recommender.catalogue.encoder.name, reranker=result.reranker,
                          sequence=result.sequence),
            reranked=result.reranker is not None,
            notes=result.notes, took_ms=round(result.took_ms, 3), interpreted=result.interpreted,
        )
