"""The catalogue: items validated, encoded (dense + BM25) and stored in the items collection."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders import BiEncoder, item_text
from retrieval.state.bm25 import Bm25Encoder
from retrieval.state.facets import Facets
from retrieval.storage.event_log import EventLog, ItemChange
from retrieval.storage.layout import ITEMS
from retrieval.storage.records import InvalidRecord, Item, parse_item
from retrieval.storage.vector_store import CollectionSpec, Hit, ItemFilter, StoredPoint, VectorStore, scroll_all


def items_spec(dim: int, name: str = ITEMS) -> CollectionSpec:
    return CollectionSpec(
        name=name,
        dim=dim,
        sparse=True,
        keyword_indexes=("id", "brand_key", "category_keys"),
        float_indexes=("price",),
    )


@dataclass
class Rejection:
    """A row that was not written: its position in the batch (or file line), id if known, and why."""

    index: int
    id: str | None
    error: str
    field: str | None = None


@dataclass
class UpsertReport:
    upserted: int = 0
    rejected: list[Rejection] = field(default_factory=list)


class _VectorCache:
    """Recently used item vectors: a profile reads up to a few hundred per refresh, and the store
    hands them out as lists to be converted. Writes and deletes through the catalogue drop their ids."""

    def __init__(self, size: int = 20_000):
        self._size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ids: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            found = {}
            for i in ids:
                vector = self._vectors.get(i)
                if vector is not None:
                    self._vectors.move_to_end(i)
                    found[i] = vector
            return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            for i, vector in vectors.items():
                if vector is not None:
                    vector.setflags(write=False)  # shared by every reader: nobody may change it in place
                    self._vectors[i] = vector
                    self._vectors.move_to_end(i)
            while len(self._vectors) > self._size:
                self._vectors.popitem(last=False)

    def drop(self, ids: list[str]) -> None:
        with self._lock:
            for i in ids:
                self._vectors.pop(i, None)


class Catalogue:
    """Items in the vector store.

    Example::

        catalogue = Catalogue(store, BiEncoder(), Bm25Encoder())
        report = catalogue.upsert([{"id": "sku-1", "title": "Quiet mechanical keyboard", "price": 49.0}])
        catalogue.similar("sku-1", k=5)
    """

    def __init__(self, store: VectorStore, encoder: BiEncoder, bm25: Bm25Encoder, collection: str = ITEMS,
                 record: EventLog | None = None):
        self.store = store
        self.record = record  # the system of record items are written to first; None: the vector store only
        self.written: Callable[[list[int]], None] | None = None  # told the numbers of this instance's writes
        self.encoder = encoder
        self.bm25 = bm25
        self.collection = collection
        self.store.ensure_collection(items_spec(encoder.dim, collection))
        self._write_lock = threading.Lock()
        self._facets: Facets | None = None
        self._vectors = _VectorCache()
        # Counts changes to the indexed items (upserts and deletes, here or by another instance): what
        # is derived from the items and kept (``CategoryItems``) is current while it stays the same.
        self.generation = 0
        # A write the record took and the index did not (the index failed, or the process was stopped
        # between them): the next start must replay the record, not trust this index.
        self.behind_record = False

    @staticmethod
    def validate(rows: list[Any], first_index: int = 0) -> tuple[list[Item], list[Rejection]]:
        """Split raw rows into valid items and rejections. A later duplicate id in the same batch
        wins, as a later write would."""
        valid: dict[str, Item] = {}
        rejected: list[Rejection] = []
        for offset, raw in enumerate(rows):
            try:
                item = parse_item(raw)
            except InvalidRecord as err:
                raw_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
                rejected.append(Rejection(first_index + offset, raw_id, str(err), err.field))
                continue
            valid.pop(item.id, None)
            valid[item.id] = item
        return list(valid.values()), rejected

    def encode(self, items: list[Item], batch_size: int = 64) -> list[StoredPoint]:
        payloads = [item.payload() for item in items]
        texts = [item_text(p) for p in payloads]
        vectors = self.encoder.encode(texts, batch_size=batch_size)
        sparse = self.bm25.encode_documents(texts)
        return [StoredPoint(item.id, p, vec, sv) for item, p, vec, sv in zip(items, payloads, vectors, sparse)]

    def write(self, points: list[StoredPoint]) -> list[int]:
        """Store encoded items: in the system of record first (their numbers there are returned),
        then in the vector index, which is derived from it."""
        with self._write_lock:
            seqs = self.record.put_items(self.collection, points) if self.record is not None else []
            if self.written is not None:
                self.written(seqs)
            self._index_recorded(points, [])
        return seqs

    def apply(self, changes: list[ItemChange]) -> None:
        """Bring the vector index up to item changes another instance wrote to the system of record."""
        mine = [c for c in changes if c.collection == self.collection]
        if mine:
            with self._write_lock:
                latest = {c.id: c.point for c in mine}  # the last change of an item wins
                if self.record is not None:
                    # As the record holds them now: this instance may have written one of them since
                    # the changes were read, and an older change must not overwrite it.
                    latest = self.record.items_now(self.collection, list(latest))
                self._index([p for p in latest.values() if p is not None], [i for i, p in latest.items() if p is None])

    def forget_cached(self, changes: list[ItemChange]) -> None:
        """Drop what this instance keeps of items another instance changed in a shared vector index."""
        mine = [c for c in changes if c.collection == self.collection]
        with self._write_lock:
            self._vectors.drop([c.id for c in mine])
            if self._facets is not None:
                self._facets = self._facets.with_payloads([c.point.payload for c in mine if c.point is not None])
            self.generation += 1

    def _index_recorded(self, points: list[StoredPoint], deleted: list[str]) -> None:
        """``_index`` for what the record has just taken: a failure marks the index behind it."""
        try:
            self._index(points, deleted)
        except BaseException:
            self.behind_record = self.record is not None
            raise

    def _index(self, points: list[StoredPoint], deleted: list[str]) -> None:
        """Write the vector index (callers hold the write lock)."""
        if points:
            self.store.upsert(self.collection, points)
            # Extend the known names instead of re-reading the whole catalogue on the next query.
            if self._facets is not None:
                self._facets = self._facets.with_payloads([p.payload for p in points])
        if deleted:
            self.store.delete(self.collection, deleted)
        self._vectors.drop([p.id for p in points] + deleted)  # re-read as stored (Qdrant normalises for cosine)
        self.generation += 1

    def rebuild_index(self, progress=None) -> int:
        """Write every item of the system of record into the vector index again, vectors as stored
        (no re-encoding); returns how many."""
        n = 0
        with self._write_lock:
            for points in self.record.stored_items(self.collection):
                self._index_recorded(points, [])
                n += len(points)
                if progress is not None:
                    progress.update(len(points))
        return n

    def upsert(self, rows: list[Any], batch_size: int = 64) -> UpsertReport:
        """Validate, encode and store rows; invalid rows are reported and nothing of them is written."""
        items, rejected = self.validate(rows)
        if items:
            self.write(self.encode(items, batch_size=batch_size))
        return UpsertReport(upserted=len(items), rejected=rejected)

    def get(self, item_id: str, with_vector: bool = False) -> StoredPoint | None:
        found = self.store.retrieve(self.collection, [item_id], with_vectors=with_vector)
        return found[0] if found else None

    def get_many(self, item_ids: list[str], with_vectors: bool = False) -> dict[str, StoredPoint]:
        return {p.id: p for p in self.store.retrieve(self.collection, item_ids, with_vectors=with_vectors)}

    def vectors(self, item_ids: list[str]) -> dict[str, np.ndarray]:
        """Item vectors by id (unknown ids left out), from memory where this catalogue has them."""
        found = self._vectors.get(item_ids)
        missing = [i for i in item_ids if i not in found]
        if missing:
            read = {i: p.vector for i, p in self.get_many(missing, with_vectors=True).items() if p.vector is not None}
            self._vectors.put(read)
            found.update(read)
        return found

    def existing(self, item_ids: list[str]) -> set[str]:
        return self.store.matching_ids(self.collection, list(dict.fromkeys(item_ids)), None)

    def delete(self, item_id: str) -> bool:
        if not self.existing([item_id]):
            return False
        with self._write_lock:
            if self.record is not None:
                seqs = self.record.delete_items(self.collection, [item_id])
                if self.written is not None:
                    self.written(seqs)
            self._index_recorded([], [item_id])
        # Facets keep a deleted item's names: a constraint on them just matches nothing more.
        return True

    def facets(self) -> Facets:
        """The brands, categories and titles the catalogue knows (read once, then kept up to date by writes)."""
        facets = self._facets
        if facets is None:
            payloads = [p.payload for page in scroll_all(self.store, self.collection, batch=1024) for p in page]
            facets = self._facets = Facets.from_payloads(payloads)
        return facets

    def similar(self, item_id: str, k: int = 10, flt: ItemFilter | None = None) -> list[Hit] | None:
        """Nearest items by text vector; None if the item is unknown. Works for items nobody
        interacted with, since it needs only the item's own vector."""
        point = self.get(item_id, with_vector=True)
        if point is None:
            return None
        return self.store.search_dense(self.collection, point.vector, k, flt, exclude=[item_id])

    def count(self) -> int:
        return self.store.count(self.collection)

    def optimize(self) -> None:
        self.store.optimize(self.collection)
