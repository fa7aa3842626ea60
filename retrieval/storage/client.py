"""The scale-out store: a Qdrant server or cluster through ``qdrant-client``.

Chosen by ``HYBRIDREC_QDRANT_URL``; tested against ``QdrantClient(":memory:")``, which speaks the
same client API in-process. Writes wait for the server's acknowledgement.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

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

_FILTERS = FilterModels(
    field=models.FieldCondition, match_any=lambda values: models.MatchAny(any=values),
    range=lambda gte, lte: models.Range(gte=gte, lte=lte), has_id=lambda ids: models.HasIdCondition(has_id=ids),
    filter=models.Filter)


def _filter(flt: ItemFilter | None, exclude: Collection[str] = (), only: Collection[str] = ()) -> models.Filter | None:
    return qdrant_filter(_FILTERS, flt, exclude, only)


class ClientVectorStore:
    """Collections on a Qdrant server (or ``QdrantClient(":memory:")`` in tests).

    Example::

        store = ClientVectorStore(QdrantClient(url="http://localhost:6333"), prefix="hybridrec_")
    """

    def __init__(self, client: QdrantClient, prefix: str = "hybridrec_"):
        self.client = client
        self.prefix = prefix

    def _name(self, collection: str) -> str:
        return self.prefix + collection

    def ensure_collection(self, spec: CollectionSpec) -> None:
        name = self._name(spec.name)
        if self.client.collection_exists(name):
            return
        self.client.create_collection(
            collection_name=name,
            vectors_config={DENSE: models.VectorParams(size=spec.dim, distance=models.Distance.COSINE)},
            sparse_vectors_config=(
                {SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)} if spec.sparse else None
            ),
        )
        for key in spec.keyword_indexes:
            self.client.create_payload_index(name, key, field_schema=models.PayloadSchemaType.KEYWORD)
        for key in spec.float_indexes:
            self.client.create_payload_index(name, key, field_schema=models.PayloadSchemaType.FLOAT)

    def drop_collection(self, name: str) -> None:
        if self.client.collection_exists(self._name(name)):
            self.client.delete_collection(self._name(name))

    def collections(self) -> list[str]:
        names = [c.name for c in self.client.get_collections().collections]
        return sorted(n[len(self.prefix):] for n in names if n.startswith(self.prefix))

    def upsert(self, collection: str, points: list[StoredPoint], durable: bool = True) -> None:
        # The server's own write-ahead log makes an applied write durable; ``durable`` has no cheaper form here.
        if not points:
            return
        structs = []
        for p in points:
            vectors: dict[str, Any] = {DENSE: p.vector.tolist()}
            if p.sparse is not None:
                vectors[SPARSE] = models.SparseVector(indices=p.sparse.indices, values=p.sparse.values)
            structs.append(models.PointStruct(id=point_id(p.id), vector=vectors, payload={**p.payload, "id": p.id}))
        self.client.upsert(self._name(collection), points=structs, wait=True)

    def delete(self, collection: str, ids: list[str], durable: bool = True) -> None:
        if ids:
            self.client.delete(
                self._name(collection), points_selector=models.PointIdsList(points=[point_id(x) for x in ids]), wait=True
            )

    def flush(self, collection: str) -> None:
        """Nothing to do: the server made each write durable before answering it."""

    def retrieve(self, collection: str, ids: list[str], with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        records = self.client.retrieve(
            self._name(collection), ids=[point_id(x) for x in ids], with_payload=True, with_vectors=with_vectors
        )
        return [stored_point(r, with_vectors) for r in records]

    def _query(self, collection, query, using, limit, flt, exclude) -> list[Hit]:
        response = self.client.query_points(
            self._name(collection), query=query, using=using, query_filter=_filter(flt, exclude),
            limit=limit, with_payload=["id"],
        )
        return [Hit(p.payload["id"], float(p.score)) for p in response.points]

    def search_dense(self, collection, vector, limit, flt=None, exclude=()) -> list[Hit]:
        return self._query(collection, np.asarray(vector, dtype=np.float32).tolist(), DENSE, limit, flt, exclude)

    def search_sparse(self, collection, vector: SparseVector, limit, flt=None, exclude=()) -> list[Hit]:
        if not vector.indices:
            return []
        query = models.SparseVector(indices=vector.indices, values=vector.values)
        return self._query(collection, query, SPARSE, limit, flt, exclude)

    def matching_ids(self, collection: str, ids: list[str], flt: ItemFilter | None) -> set[str]:
        if not ids:
            return set()
        records, _ = self.client.scroll(
            self._name(collection), scroll_filter=_filter(flt, only=ids), limit=len(ids), with_payload=["id"]
        )
        return {r.payload["id"] for r in records}

    def scroll(self, collection, limit, offset=None, flt=None, with_vectors=False):
        records, next_offset = self.client.scroll(
            self._name(collection), scroll_filter=_filter(flt), limit=limit, offset=offset,
            with_payload=True, with_vectors=with_vectors,
        )
        return [stored_point(r, with_vectors) for r in records], next_offset

    def scroll_ids(self, collection, limit, offset=None, flt=None):
        records, next_offset = self.client.scroll(
            self._name(collection), scroll_filter=_filter(flt), limit=limit, offset=offset, with_payload=["id"],
        )
        return [r.payload["id"] for r in records], next_offset

    def count(self, collection: str) -> int:
        return self.client.count(self._name(collection), exact=True).count

    def optimize(self, collection: str) -> None:
        # A server builds HNSW in the background once a segment passes its indexing threshold.
        return None

    def close(self) -> None:
        self.client.close()
