"""``/v1/explanations``: why an item is (or would be) recommended, grounded in the scoring."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.exceptions import NotFoundException

from prompts import Generator
from retrieval.explain.evidence import UnknownItem
from retrieval.limits import ID_MAX_CHARS, MAX_HISTORY, TEXT_MAX_CHARS
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest
from service.access import READ, SECURITY
from service.api.schemas import Filters, to_item_filter
from service.explanation import explain_item


class ExplanationPost(msgspec.Struct, forbid_unknown_fields=True):
    """Explain ``item_id`` for a user, an ad-hoc history, a query, or any mix (as in recommendations)."""

    item_id: Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)]
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)] | None = None
    query: Annotated[str, msgspec.Meta(max_length=TEXT_MAX_CHARS)] | None = None
    history: Annotated[list[str], msgspec.Meta(max_length=MAX_HISTORY)] = []
    filters: Filters | None = None
    rerank: bool = True
    diversity: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    counterfactual: bool = True


class ExplanationOut(msgspec.Struct):
    item_id: str
    text: str
    generator: str
    guard: dict[str, Any]
    evidence: dict[str, Any]
    took_ms: float


class ExplanationController(Controller):
    path = "/v1/explanations"
    tags = ["explanations"]
    security = SECURITY

    @post("/", opt={"scope": READ}, sync_to_thread=True, summary="Explain a recommendation", status_code=200)
    def explain(self, data: ExplanationPost, recommender: Recommender, explanation_generator: Generator
                ) -> ExplanationOut:
        started = time.perf_counter()
        req = RecommendRequest(user_id=data.user_id, query=data.query, history=list(data.history),
                               item_filter=to_item_filter(data.filters), rerank=data.rerank,
                               diversity=data.diversity)
        try:
            out = explain_item(recommender, explanation_generator, req, data.item_id,
                               counterfactual=data.counterfactual)
        except UnknownItem:
            raise NotFoundException(f"item {data.item_id!r} not found") from None
        return ExplanationOut(item_id=data.item_id, took_ms=round((time.perf_counter() - started) * 1000, 3), **out)
