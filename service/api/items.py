"""``/v1/items``: upsert in batches, read, delete, and similar items."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, put
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from retrieval.limits import MAX_K
from retrieval.state.catalogue import Catalogue
from retrieval.storage.records import Item
from service.access import READ, SECURITY, WRITE
from service.api.dependencies import ReindexJob, refuse_during_reindex
from service.api.errors import invalid_record, not_found
from service.api.schemas import Attributes, ItemSummary, UnsupportedMediaType, path_id, record_schema
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
    pass


class SimilarItems(msgspec.Struct):
    item_id: str
    items: list[SimilarItem]


ItemId = Annotated[str, path_id("external item id")]


class ItemController(Controller):
    path = "/v1/items"
    tags = ["items"]
    security = SECURITY

    @put("/", opt={"scope": WRITE}, sync_to_thread=True, summary="Insert or replace items",
         raises=[UnsupportedMediaType])
    def upsert(self, data: ItemsUpsert, catalogue: Catalogue, settings: Settings, reindex_job: ReindexJob) -> UpsertResult:
        refuse_during_reindex(reindex_job)
        if len(data.items) > settings.max_batch:
            raise invalid_record("items", f"at most {settings.max_batch} items per request; "
                                          "use `hybridrec ingest` for bulk loads")
        report = catalogue.upsert(data.items)
        ITEMS_WRITTEN.labels("upserted").inc(report.upserted)
        ITEMS_WRITTEN.labels("rejected").inc(len(report.rejected))
        return UpsertResult(report.upserted, [RejectedItem(r.index, r.id, r.error) for r in report.rejected])

    @get("/{item_id:str}", opt={"scope": READ}, sync_to_thread=True, summary="Get one item",
         raises=[NotFoundException])
    def get_item(self, item_id: ItemId, catalogue: Catalogue) -> ItemOut:
        point = catalogue.get(item_id)
        if point is None:
            raise not_found("item", item_id)
        return ItemOut.from_payload(point.payload)

    @delete("/{item_id:str}", opt={"scope": WRITE}, sync_to_thread=True, summary="Delete one item", status_code=204,
            raises=[NotFoundException])
    def delete_item(self, item_id: ItemId, catalogue: Catalogue, reindex_job: ReindexJob) -> None:
        refuse_during_reindex(reindex_job)
        if not catalogue.delete(item_id):
            raise not_found("item", item_id)

    @get("/{item_id:str}/similar", opt={"scope": READ}, sync_to_thread=True, summary="Items similar to one item",
         raises=[NotFoundException])
    def similar(
        self, item_id: ItemId, catalogue: Catalogue,
        k: Annotated[int, Parameter(ge=1, le=MAX_K, description="how many items")] = 10,
    ) -> SimilarItems:
        hits = catalogue.similar(item_id, k)
        if hits is None:
            raise not_found("item", item_id)
        payloads = catalogue.get_many([h.id for h in hits])
        out = []
        for h in hits:
            p = payloads.get(h.id)
            if p is not None:
                out.append(SimilarItem(h.id, p.payload["title"], round(h.score, 6), p.payload.get("brand"),
                                       p.payload.get("categories") or [], p.payload.get("price")))
        return SimilarItems(item_id, out)
