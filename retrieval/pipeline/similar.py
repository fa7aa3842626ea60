"""Items similar to one item: what people took together, fused with the item's own text.

Three sources propose neighbours of the item, each ranked, and ``fusion.fuse`` (weighted RRF that
knows "no opinion") merges them:

- ``collaborative``: the items taken together with it (``CoOccurrenceIndex.neighbours``), only
  when someone has taken it; it has no opinion about items nobody has taken;
- ``dense``: the nearest items to its stored text vector (the bi-encoder space);
- ``lexical``: BM25 over its own text (title, brand, categories, description) against every item's.

The text sources need nothing but the item, so a new item has neighbours from its first second,
and a new candidate is not sunk by the collaborative source's silence about it. Filters are
applied by the store, for every source (Qdrant's filter, the one implementation). Each result
keeps every source's rank, score and contribution, and the sources with no opinion, so the answer
can be explained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders import item_text
from retrieval.pipeline.fusion import FusedCandidate, SourceRank, SourceResult, fuse
from retrieval.pipeline.sources import rank_hits
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.vector_store import ItemFilter, StoredPoint

SIMILAR_SOURCES = ("collaborative", "dense", "lexical")


@dataclass(frozen=True)
class SimilarConfig:
    """Fusion settings for similar items, chosen on the validation split of the shared dataset
    (``benchmarks/similar_items.py``: the query is a user's third-to-last item, the target the
    second-to-last), never on test. ``collaborative_proximity`` and ``collaborative_backward`` are
    ``CoOccurrenceIndex.neighbours``' sequential settings (0 and 1: plain co-occurrence)."""

    weights: dict[str, float] = field(default_factory=lambda: {"collaborative": 3.0, "dense": 1.0, "lexical": 0.5})
    rrf_k: int = 60
    # 1: a candidate nobody has taken is credited its text sources' mean for the collaborative share.
    # 0.5 was a hair better on validation's ``all`` and lost most of the cold-target slice.
    no_opinion_credit: float = 1.0
    min_pool: int = 100  # each source proposes at least this many (k more when k is larger)
    collaborative_proximity: float = 1.0
    collaborative_backward: float = 0.5


@dataclass
class SimilarItem:
    """One neighbour: its fused score, payload, every source's rank/score/contribution, and the
    sources that could not judge it (``collaborative`` when nobody has taken it)."""

    id: str
    score: float
    payload: dict[str, Any]
    sources: dict[str, SourceRank]
    no_opinion: list[str]
    text_similarity: float | None = None  # cosine of the two items' text vectors (what the route used to score)


@dataclass
class SimilarResult:
    item_id: str
    items: list[SimilarItem]
    sources: list[str]  # the sources that proposed anything for this item
    notes: list[str] = field(default_factory=list)


def _cosines(query: np.ndarray, vectors: dict[str, np.ndarray]) -> dict[str, float]:
    q = np.asarray(query, dtype=np.float32)
    q = q / (np.linalg.norm(q) or 1.0)
    return {i: float(np.dot(q, v) / (np.linalg.norm(v) or 1.0)) for i, v in vectors.items()}


class SimilarItems:
    """Hybrid item-to-item neighbours.

    Example::

        similar = SimilarItems(engine.catalogue, engine.index)
        result = similar.similar("sku-1", k=5, flt=ItemFilter(price_max=30.0))
        for item in result.items:
            print(item.id, item.score, sorted(item.sources))   # e.g. sku-9 0.016 ['collaborative', 'dense']
        similar.similar("unknown-id") is None                    # an unknown item
    """

    def __init__(self, catalogue: Catalogue, index: CoOccurrenceIndex | None, config: SimilarConfig | None = None):
        self.catalogue, self.index, self.config = catalogue, index, config or SimilarConfig()

    def candidates(self, point: StoredPoint, pool: int, flt: ItemFilter | None = None) -> list[SourceResult]:
        """Every source's ranked list for a stored item (read with its vector), filters applied in
        the store, the item itself left out; a source with nothing to say is left out."""
        cfg, catalogue, exclude = self.config, self.catalogue, [point.id]
        results = []
        index = self.index
        if index is not None and index.knows(point.id):
            scores = index.neighbours([point.id], decay=1.0, limit=pool * 2,
                                      proximity=cfg.collaborative_proximity, backward=cfg.collaborative_backward)
            ranked = [(i, s) for i, s in scores.items() if i != point.id]
            # One store round trip: deleted items drop out and the filters apply, as for the text sources.
            allowed = catalogue.store.matching_ids(catalogue.collection, [i for i, _ in ranked], flt)
            ranked = [(i, s) for i, s in ranked if i in allowed][:pool]
            if ranked:
                results.append(SourceResult("collaborative", ranked, cfg.weights.get("collaborative", 1.0),
                                            knows=index.knows))
        if point.vector is not None:
            hits = catalogue.store.search_dense(catalogue.collection, point.vector, pool, flt, exclude)
            results.append(SourceResult("dense", rank_hits(hits), cfg.weights.get("dense", 1.0)))
        sparse = catalogue.bm25.encode_query(item_text(point.payload))
        if sparse.indices:
            hits = catalogue.store.search_sparse(catalogue.collection, sparse, pool, flt, exclude)
            results.append(SourceResult("lexical", rank_hits(hits), cfg.weights.get("lexical", 1.0)))
        return [r for r in results if r.ranked]

    def fuse(self, results: list[SourceResult], k: int) -> list[FusedCandidate]:
        """The sources' lists fused (weights as the results carry them), best ``k`` first."""
        return fuse(results, self.config.rrf_k, self.config.no_opinion_credit)[:k]

    def similar(self, item_id: str, k: int = 10, flt: ItemFilter | None = None) -> SimilarResult | None:
        """The ``k`` items most similar to ``item_id`` within ``flt``; None if the item is unknown."""
        point = self.catalogue.get(item_id, with_vector=True)
        if point is None:
            return None
        results = self.candidates(point, max(self.config.min_pool, k), flt)
        fused = self.fuse(results, k)
        ids = [c.id for c in fused]
        payloads = self.catalogue.get_many(ids)
        cosine = _cosines(point.vector, self.catalogue.vectors(ids)) if point.vector is not None else {}
        items = [SimilarItem(c.id, c.score, payloads[c.id].payload, c.sources, c.no_opinion, cosine.get(c.id))
                 for c in fused if c.id in payloads]
        names = [r.name for r in results]
        notes = [] if "collaborative" in names else [
            "nobody has taken this item yet (or nothing taken with it matches): neighbours from its text alone"]
        return SimilarResult(item_id, items, names, notes)
