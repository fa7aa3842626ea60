"""``/v1/explanations``: why an item is (or would be) recommended, grounded in the scoring."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.exceptions import NotFoundException

from prompts import Generator
from retrieval.explain.evidence import UnknownItem
from retrieval.limits import MAX_K
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest
from retrieval.storage.records import check_id
from service.access import READ, SECURITY
from service.api.schemas import Filters, Id, Ids, Text, UnsupportedMediaType, check_ids, check_query, to_item_filter
from service.explanation import explain_item


class ExplanationPost(msgspec.Struct, forbid_unknown_fields=True):
    """Explain ``item_id`` for a user, an ad-hoc history, a query, or any mix (as in recommendations)."""

    item_id: Id
    user_id: Id | None = None
    query: Text | None = None
    history: Ids = []
    # The list the item is explained in: the same fields as /v1/recommendations, so the rank and
    # the evidence are those of the list that request returns.
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 10
    filters: Filters | None = None
    exclude_seen: bool = True
    rerank: bool = True
    # Litestar drops a bound of 0 from the document (it reads 0 as unset), so the minimum is said again.
    diversity: Annotated[float, msgspec.Meta(ge=0, le=1, extra_json_schema={"extra": {"minimum": 0}})] | None = None
    max_per_category: Annotated[int, msgspec.Meta(ge=1)] | None = None
    understand_query: bool = True
    counterfactual: bool = True

    def __post_init__(self) -> None:
        check_id("item_id", self.item_id)
        if self.user_id is not None:
            check_id("user_id", self.user_id)
        check_query(self.query)
        check_ids("history", self.history)


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

    @post("/", opt={"scope": READ}, sync_to_thread=True, summary="Explain a recommendation", status_code=200,
          raises=[NotFoundException, UnsupportedMediaType])
    def explain(self, data: ExplanationPost, recommender: Recommender, explanation_generator: Generator
                ) -> ExplanationOut:
        started = time.perf_counter()
        req = RecommendRequest(user_id=data.user_id, query=data.query, history=list(data.history), k=data.k,
                               item_filter=to_item_filter(data.filters), exclude_seen=data.exclude_seen,
                               rerank=data.rerank, diversity=data.diversity, max_per_category=data.max_per_category,
                               understand_query=data.understand_query)
        try:
            out = explain_item(recommender, explanation_generator, req, data.item_id,
                               counterfactual=data.counterfactual)
        except UnknownItem:
            raise NotFoundException(f"item {data.item_id!r} not found") from None
        return ExplanationOut(item_id=data.item_id, took_ms=round((time.perf_counter() - started) * 1000, 3), **out)
