"""The embedded store: Qdrant's own engine in-process (``qdrant-edge-py``), one shard per collection.

No server to run; HNSW, payload indexes, filters and persistence are Qdrant's. Every write is
flushed before it returns, so an acknowledged write survives a kill.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as q

from retrieval.storage.records import point_id
from retrieval.storage.vector_store import (
    DENSE,
    SPARSE,
    CollectionSpec,
    FilterModels,
    Hit,
    ItemFilter,
    SparseVector,
    StoredPoint,
    qdrant_filter,
    stored_point,
)

_ID_ONLY = q.PayloadSelector.Include(["id"])


_FILTERS = FilterModels(
    field=q.FieldCondition, match_any=lambda values: q.MatchAny(any=values),
    range=lambda gte, lte: q.RangeFloat(gte=gte, lte=lte), has_id=lambda ids: q.HasIdCondition(point_ids=set(ids)),
    filter=q.Filter)


def _filter(flt: ItemFilter | None, exclude: Collection[str] = (), only: Collection[str] = ()) -> q.Filter | None:
    return qdrant_filter(_FILTERS, flt, exclude, only)


class EdgeVectorStore:
    """Collections as Qdrant Edge shards under ``root``.

    Example::

        store = EdgeVectorStore("data/collections")
        store.ensure_collection(CollectionSpec("items", dim=384, sparse=True))
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, q.EdgeShard] = {}
        self._lock = threading.Lock()
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and any(path.iterdir()):
                self._shards[path.name] = q.EdgeShard.load(str(path))

    def _shard(self, name: str) -> q.EdgeShard:
        try:
            return self._shards[name]
        except KeyError:
            raise KeyError(f"collection {name!r} does not exist") from None

    def ensure_collection(self, spec: CollectionSpec) -> None:
        with self._lock:
            if spec.name in self._shards:
                return
            config = q.EdgeConfig(
                vectors={DENSE: q.EdgeVectorParams(size=spec.dim, distance=q.Distance.Cosine)},
                sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)} if spec.sparse else None,
            )
            path = self.root / spec.name
            shard = q.EdgeShard.create(str(path), config)
            for key in spec.keyword_indexes:
                shard.update(q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Keyword))
            for key in spec.float_indexes:
                shard.update(q.UpdateOperation.create_field_index(key, q.PayloadSchemaType.Float))
            shard.flush()
            self._shards[spec.name] = shard

    def drop_collection(self, name: str) -> None:
        with self._lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self.root / name, ignore_errors=True)

    def collections(self) -> list[str]:
        return sorted(self._shards)

    def upsert(self, collection: str, points: list[StoredPoint], durable: bool = True) -> None:
        if not points:
            return
        shard = self._shard(collection)
        edge_points = []
        for p in points:
            vectors: dict[str, Any] = {DENSE: p.vector.tolist()}
            if p.sparse is not None:
                vectors[SPARSE] = q.SparseVector(p.sparse.indices, p.sparse.values)
            edge_points.append(q.Point(point_id(p.id), vectors, {**p.payload, "id": p.id}))
        # One point per operation: from one batch, two stores holding the same points sum BM25
        # scores in different orders (the last digit differs, and near-ties reorder); written one
        # by one, the same writes in the same order give the same scores.
        for point in edge_points:
            shard.update(q.UpdateOperation.upsert_points([point]))
        if durable:
            shard.flush()

    def delete(self, collection: str, ids: list[str], durable: bool = True) -> None:
        if not ids:
            return
        shard = self._shard(collection)
        shard.update(q.UpdateOperation.delete_points([point_id(x) for x in ids]))
        if durable:
            shard.flush()

    def flush(self, collection: str) -> None:
        self._shard(collection).flush()

    def retrieve(self, collection: str, ids: list[str], with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        records = self._shard(collection).retrieve(
            [point_id(x) for x in ids], with_payload=True, with_vector=with_vectors
        )
        return [stored_point(r, with_vectors) for r in records]

    def _query(self, collection: str, query: Any, limit: int, flt, exclude) -> list[Hit]:
        points = self._shard(collection).query(
            q.QueryRequest(limit=limit, query=query, filter=_filter(flt, exclude), with_payload=_ID_ONLY)
        )
        return [Hit(p.payload["id"], float(p.score)) for p in points]

    def search_dense(self, collection, vector, limit, flt=None, exclude=()) -> list[Hit]:
        query = q.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=DENSE)
        return self._query(collection, query, limit, flt, exclude)

    def search_sparse(self, collection, vector: SparseVector, limit, flt=None, exclude=()) -> list[Hit]:
        if not vector.indices:
            return []
        query = q.Query.Nearest(q.SparseVector(vector.indices, vector.values), using=SPARSE)
        return self._query(collection, query, limit, flt, exclude)

    def matching_ids(self, collection: str, ids: list[str], flt: ItemFilter | None) -> set[str]:
        if not ids:
            return set()
        records, _ = self._shard(collection).scroll(
            q.ScrollRequest(limit=len(ids), filter=_filter(flt, only=ids), with_payload=_ID_ONLY)
        )
        return {r.payload["id"] for r in records}

    def scroll(self, collection, limit, offset=None, flt=None, with_vectors=False):
        records, next_offset = self._shard(collection).scroll(
            q.ScrollRequest(offset=offset, limit=limit, filter=_filter(flt), with_payload=True,
                            with_vector=with_vectors)
        )
        return [stored_point(r, with_vectors) for r in records], next_offset

    def scroll_ids(self, collection, limit, offset=None, flt=None):
        records, next_offset = self._shard(collection).scroll(
            q.ScrollRequest(offset=offset, limit=limit, filter=_filter(flt), with_payload=_ID_ONLY)
        )
        return [r.payload["id"] for r in records], next_offset

    def count(self, collection: str) -> int:
        return self._shard(collection).count(q.CountRequest(exact=True))

    def optimize(self, collection: str) -> None:
        shard = self._shard(collection)
        shard.optimize()
        shard.flush()

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
