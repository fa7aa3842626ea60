"""``/v1/items``: upsert in batches, browse and search, read, delete, and similar items."""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, put
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Parameter

from retrieval.engine import Engine
from retrieval.limits import MAX_K, NAME_MAX_CHARS, TEXT_MAX_CHARS
from retrieval.pipeline.fusion import SourceRank
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest
from retrieval.pipeline.similar import SimilarItems as HybridSimilar
from retrieval.state.catalogue import Catalogue
from retrieval.storage.records import Item, check_name, check_text
from retrieval.storage.vector_store import ItemFilter
from service.access import READ, SECURITY, WRITE
from service.api.dependencies import ReindexJob
from service.api.errors import invalid_record, not_found
from service.api.schemas import (
    TEXT_PATTERN,
    Attributes,
    ItemSummary,
    UnsupportedMediaType,
    path_id,
    query_param,
    record_schema,
)
from service.observability import ITEMS_WRITTEN
from service.settings import Settings


class ItemsUpsert(msgspec.Struct, forbid_unknown_fields=True):
    """Items to insert or replace. Each row is validated on its own: valid rows are written,
    invalid ones are reported in ``rejected`` and not written. Row fields: ``id`` (str, the id
    rule), ``title`` (str), ``description``, ``brand``, ``categories`` ([str]), ``price`` (number
    >= 0), ``attributes`` ({str: str|number|bool}); the README's limits table bounds each."""

    items: Annotated[list[Any], msgspec.Meta(extra_json_schema={"extra": {"items": record_schema(Item)}})]


class RejectedItem(msgspec.Struct):
    index: int
    id: str | None
    error: str


class UpsertResult(msgspec.Struct):
    upserted: int
    rejected: list[RejectedItem]


class ItemOut(msgspec.Struct):
    id: str
    title: str
    description: str
    brand: str | None
    categories: list[str]
    price: float | None
    attributes: Attributes

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "ItemOut":
        return cls(
            id=payload["id"], title=payload["title"], description=payload.get("description") or "",
            brand=payload.get("brand"), categories=payload.get("categories") or [], price=payload.get("price"),
            attributes=payload.get("attributes") or {},
        )


class SimilarItem(ItemSummary):
    """A neighbour. ``score``: the fused score (weighted reciprocal-rank fusion of the sources,
    higher is closer); ``text_similarity``: the cosine of the two items' text vectors (the score
    this route gave before it became hybrid); ``sources``: each source that proposed the item, with
    its rank, score and contribution (``collaborative``: taken together with the item; ``dense``:
    near in the text-vector space; ``lexical``: BM25 over the item's text); ``no_opinion``: sources
    that could not judge it (``collaborative`` when nobody has taken it)."""

    sources: dict[str, SourceRank] = {}
    no_opinion: list[str] = []
    text_similarity: float | None = None


class SimilarItems(msgspec.Struct):
    """``sources``: the sources that proposed anything for this item (``collaborative`` only once
    someone has taken it); ``notes``: why the answer is what it is, where that is not obvious."""

    item_id: str
    items: list[SimilarItem]
    sources: list[str] = []
    notes: list[str] = []


class ItemsPage(msgspec.Struct):
    """A page of the catalogue. Browsing: ``next`` is the cursor of the following page (send it as
    ``offset``; None on the last page) and ``score`` is 0. Searching: the best ``limit`` items,
    ``next`` None. ``total``: the catalogue's size, whatever the filters."""

    items: list[ItemSummary]
    next: str | None
    total: int


ItemId = Annotated[str, path_id("external item id")]
SearchText = Annotated[str | None, Parameter(
    max_length=TEXT_MAX_CHARS, schema_extra={"pattern": TEXT_PATTERN},
    description="a search (may be a sentence, as a recommendation's query); without it, browse in store order")]
Cursor = Annotated[str | None, Parameter(max_length=64, description="browsing: the `next` of the previous page")]


def _cursor(offset: str | None) -> str | None:
    """The store's point id a page starts at (the opaque cursor a previous page gave)."""
    if offset is None or not offset.strip():
        return None
    try:
        return str(uuid.UUID(offset))
    except ValueError:
        raise ValidationException(detail="offset: not a cursor this service gave; send the `next` of the previous "
                                         "page, or none for the first page",
                                  extra=[{"key": "offset", "message": "not a cursor", "source": "query"}]) from None


def _summary(item_id: str, payload: dict[str, Any], score: float) -> ItemSummary:
    return ItemSummary(item_id, payload["title"], score, payload.get("brand"), payload.get("categories") or [],
                       payload.get("price"))


class ItemController(Controller):
    path = "/v1/items"
    tags = ["items"]
    security = SECURITY

    @put("/", opt={"scope": WRITE}, sync_to_thread=True, summary="Insert or replace items",
         raises=[UnsupportedMediaType])
    def upsert(self, data: ItemsUpsert, engine: Engine, settings: Settings, reindex_job: ReindexJob) -> UpsertResult:
        if len(data.items) > settings.max_batch:
            raise invalid_record("items", f"at most {settings.max_batch} items per request; "
                                          "use `hybridrec ingest` for bulk loads")
        with reindex_job.writing():
            report = engine.catalogue.upsert(data.items)  # read inside: a reindex that just ended switched it
        ITEMS_WRITTEN.labels("upserted").inc(report.upserted)
        ITEMS_WRITTEN.labels("rejected").inc(len(report.rejected))
        return UpsertResult(report.upserted, [RejectedItem(r.index, r.id, r.error) for r in report.rejected])

    @get("/", opt={"scope": READ}, sync_to_thread=True, summary="Browse or search the catalogue")
    def list_items(
        self, catalogue: Catalogue, recommender: Recommender, q: SearchText = None,
        category: Annotated[str | None, Parameter(max_length=NAME_MAX_CHARS, description="only items of this category")]
        = None,
        brand: Annotated[str | None, Parameter(max_length=NAME_MAX_CHARS, description="only items of this brand")] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_K, description="items per page")] = 20,
        offset: Cursor = None,
    ) -> ItemsPage:
        """Without ``q``: the catalogue in store order, ``limit`` at a time, narrowed by ``category``
        and ``brand`` (case-insensitive). With ``q``: a search through the recommend pipeline (no
        user; the sentence's constraints apply, and ``category`` and ``brand`` as hard filters)."""
        query = query_param("q", q, lambda f, v: check_text(f, v, TEXT_MAX_CHARS))
        category, brand = query_param("category", category, check_name), query_param("brand", brand, check_name)
        flt = ItemFilter(categories=(category,) if category else (), brands=(brand,) if brand else ())
        if query is not None:
            result = recommender.recommend(RecommendRequest(query=query, k=limit, item_filter=flt))
            items = [_summary(it.id, it.payload, round(it.score, 8)) for it in result.items]
            return ItemsPage(items, None, catalogue.count())
        points, following = catalogue.store.scroll(catalogue.collection, limit=limit, offset=_cursor(offset), flt=flt)
        return ItemsPage([_summary(p.id, p.payload, 0.0) for p in points],
                         None if following is None else str(following), catalogue.count())

    @get("/{item_id:str}", opt={"scope": READ}, sync_to_thread=True, summary="Get one item",
         raises=[NotFoundException])
    def get_item(self, item_id: ItemId, catalogue: Catalogue) -> ItemOut:
        point = catalogue.get(item_id)
        if point is None:
            raise not_found("item", item_id)
        return ItemOut.from_payload(point.payload)

    @delete("/{item_id:str}", opt={"scope": WRITE}, sync_to_thread=True, summary="Delete one item", status_code=204,
            raises=[NotFoundException])
    def delete_item(self, item_id: ItemId, engine: Engine, reindex_job: ReindexJob) -> None:
        with reindex_job.writing():
            deleted = engine.catalogue.delete(item_id)
        if not deleted:
            raise not_found("item", item_id)

    @get("/{item_id:str}/similar", opt={"scope": READ}, sync_to_thread=True, summary="Items similar to one item",
         raises=[NotFoundException])
    def similar(
        self, item_id: ItemId, engine: Engine,
        k: Annotated[int, Parameter(ge=1, le=MAX_K, description="how many items")] = 10,
        category: Annotated[str | None, Parameter(max_length=NAME_MAX_CHARS, description="only items of this category")]
        = None,
        brand: Annotated[str | None, Parameter(max_length=NAME_MAX_CHARS, description="only items of this brand")] = None,
        price_min: Annotated[float | None, Parameter(description="only items at least this price")] = None,
        price_max: Annotated[float | None, Parameter(description="only items at most this price")] = None,
    ) -> SimilarItems:
        """Hybrid neighbours (``retrieval/pipeline/similar.py``): items people took together with
        this one, fused with the nearest by text vector and by BM25 over its text, so an item nobody
        has taken yet has neighbours from its text. The filters apply to every source."""
        category, brand = query_param("category", category, check_name), query_param("brand", brand, check_name)
        for name, bound in (("price_min", price_min), ("price_max", price_max)):
            if bound is not None and not math.isfinite(bound):
                raise ValidationException(detail=f"{name}: must be a finite number",
                                          extra=[{"key": name, "message": "not finite", "source": "query"}])
        flt = ItemFilter(categories=(category,) if category else (), brands=(brand,) if brand else (),
                         price_min=price_min, price_max=price_max)
        result = HybridSimilar(engine.catalogue, engine.index).similar(item_id, k, flt)
        if result is None:
            raise not_found("item", item_id)
        out = [SimilarItem(it.id, it.payload["title"], round(it.score, 8), it.payload.get("brand"),
                           it.payload.get("categories") or [], it.payload.get("price"), it.sources, it.no_opinion,
                           None if it.text_similarity is None else round(it.text_similarity, 6))
               for it in result.items]
        return SimilarItems(item_id, out, result.sources, result.notes)
