"""The vector store interface: what the engine needs from Qdrant, in the engine's own terms.

Two implementations: ``EdgeVectorStore`` (embedded, the default) and ``ClientVectorStore`` (a Qdrant
server or cluster). Both keep the external id in the payload under ``id`` and use
``records.point_id`` for the point id, so writes are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from retrieval.storage.records import point_id

DENSE = "dense"
SPARSE = "bm25"


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass
class StoredPoint:
    """A point as the engine sees it: external id, vectors, payload."""

    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None
    sparse: SparseVector | None = None


def stored_point(record: Any, with_vectors: bool) -> StoredPoint:
    """A record from either Qdrant client (same shape: payload, and named vectors in a dict)."""
    payload = dict(record.payload or {})
    vector = sparse = None
    if with_vectors and record.vector:
        dense = record.vector.get(DENSE)
        vector = np.asarray(dense, dtype=np.float32) if dense is not None else None
        sv = record.vector.get(SPARSE)
        if sv is not None:
            sparse = SparseVector(list(sv.indices), list(sv.values))
    return StoredPoint(id=payload.get("id"), payload=payload, vector=vector, sparse=sparse)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class ItemFilter:
    """Hard constraints on items. Every field narrows the result; an empty filter matches all.

    Matching is case-insensitive: it runs on the lower-cased ``brand_key`` / ``category_keys``.
    """

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    exclude_brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None

    def conditions(self) -> Iterable[tuple]:
        """The filter as store-neutral conditions: ``("any", key, values)``, ``("none", key,
        values)``, ``("range", key, gte, lte)``. Each store turns these into its own models."""
        if self.categories:
            yield ("any", "category_keys", [c.lower() for c in self.categories])
        if self.brands:
            yield ("any", "brand_key", [b.lower() for b in self.brands])
        if self.exclude_brands:
            yield ("none", "brand_key", [b.lower() for b in self.exclude_brands])
        if self.price_min is not None or self.price_max is not None:
            yield ("range", "price", self.price_min, self.price_max)


@dataclass(frozen=True)
class FilterModels:
    """The filter classes of one Qdrant library: ``qdrant-edge-py`` and ``qdrant-client`` speak the
    same filter language under different constructors, so one translation serves both."""

    field: Callable[..., Any]  # FieldCondition(key=..., match=... | range=...)
    match_any: Callable[[list], Any]
    range: Callable[[float | None, float | None], Any]  # (gte, lte)
    has_id: Callable[[list[str]], Any]  # Qdrant point ids
    filter: Callable[..., Any]  # Filter(must=..., must_not=...)


def qdrant_filter(models: FilterModels, flt: ItemFilter | None, exclude: Collection[str] = (),
                  only: Collection[str] = ()) -> Any | None:
    """``flt`` narrowed to ``only`` (external ids) and without ``exclude``, as a Qdrant filter;
    None where nothing narrows."""
    must: list = []
    must_not: list = []
    for cond in flt.conditions() if flt else ():
        if cond[0] == "any":
            must.append(models.field(key=cond[1], match=models.match_any(list(cond[2]))))
        elif cond[0] == "none":
            must_not.append(models.field(key=cond[1], match=models.match_any(list(cond[2]))))
        elif cond[0] == "range":
            must.append(models.field(key=cond[1], range=models.range(cond[2], cond[3])))
    if exclude:
        must_not.append(models.has_id([point_id(x) for x in exclude]))
    if only:
        must.append(models.has_id([point_id(x) for x in only]))
    if not must and not must_not:
        return None
    return models.filter(must=must or None, must_not=must_not or None)


@dataclass(frozen=True)
class CollectionSpec:
    """A collection's shape: dense size, whether it has BM25 vectors, and its payload indexes."""

    name: str
    dim: int
    sparse: bool = False
    keyword_indexes: tuple[str, ...] = ()
    float_indexes: tuple[str, ...] = ()


class VectorStore(Protocol):
    """What the engine needs from a vector database."""

    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Create the collection and its payload indexes if missing (idempotent)."""

    def drop_collection(self, name: str) -> None: ...

    def collections(self) -> list[str]: ...

    def upsert(self, collection: str, points: list[StoredPoint], durable: bool = True) -> None:
        """Insert or replace points, visible when this returns; on disk too unless ``durable`` is
        False (for derived data that ``flush`` makes durable later)."""

    def delete(self, collection: str, ids: list[str], durable: bool = True) -> None: ...

    def flush(self, collection: str) -> None:
        """Make every earlier write to the collection durable."""

    def retrieve(self, collection: str, ids: list[str], with_vectors: bool = False) -> list[StoredPoint]:
        """Points by external id, in no particular order; unknown ids are skipped."""

    def search_dense(
        self, collection: str, vector: np.ndarray, limit: int,
        flt: ItemFilter | None = None, exclude: Collection[str] = (),
    ) -> list[Hit]: ...

    def search_sparse(
        self, collection: str, vector: SparseVector, limit: int,
        flt: ItemFilter | None = None, exclude: Collection[str] = (),
    ) -> list[Hit]: ...

    def matching_ids(self, collection: str, ids: list[str], flt: ItemFilter | None) -> set[str]:
        """The subset of ``ids`` that exist and satisfy ``flt``."""

    def scroll(
        self, collection: str, limit: int, offset: Any = None, flt: ItemFilter | None = None,
        with_vectors: bool = False,
    ) -> tuple[list[StoredPoint], Any]:
        """A page of points and the offset of the next page (None at the end)."""

    def scroll_ids(
        self, collection: str, limit: int, offset: Any = None, flt: ItemFilter | None = None,
    ) -> tuple[list[str], Any]:
        """``scroll`` without payloads: a page of ids and the offset of the next page (None at the end)."""

    def count(self, collection: str) -> int: ...

    def optimize(self, collection: str) -> None:
        """Build indexes after bulk loads (HNSW); a no-op where the server does it itself."""

    def close(self) -> None: ...


def scroll_all(store: VectorStore, collection: str, batch: int = 512,
               with_vectors: bool = False) -> Iterator[list[StoredPoint]]:
    """Every point of a collection, a page at a time (a page may be empty)."""
    offset = None
    while True:
        points, offset = store.scroll(collection, limit=batch, offset=offset, with_vectors=with_vectors)
        yield points
        if offset is None:
            return
