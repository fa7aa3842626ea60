"""Candidate sources: each proposes items for a request, ranked, with its own score.

Dense and lexical sources ask the vector store (hard filters and exclusions applied there); the
collaborative and popular sources come from the co-occurrence index and are filtered through the
store too, so every filter has exactly one implementation: Qdrant's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.sequence import SequenceModel
from retrieval.pipeline.context import RecommendContext
from retrieval.pipeline.fusion import SourceResult
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.vector_store import ItemFilter


def rank_hits(hits) -> list[tuple[str, float]]:
    # Qdrant returns equal scores in no fixed order; break ties by id so rankings are reproducible.
    return sorted(((h.id, h.score) for h in hits), key=lambda hs: (-hs[1], hs[0]))


class DenseSource:
    """Nearest items to a vector (the profile or the query) in the bi-encoder space.
    ``without_query_weight`` (default: ``weight``) is the profile's weight in a request without a
    query (a history or stated preferences alone): a fine-tuned encoder is chosen with its own
    weight there (``train_encoder``), which says nothing about how a profile should weigh against
    a search query."""

    def __init__(self, catalogue: Catalogue, name: str, use: str, weight: float = 1.0,
                 without_query_weight: float | None = None):
        self.catalogue, self.name, self.use, self.weight = catalogue, name, use, weight
        self.without_query_weight = weight if without_query_weight is None else without_query_weight

    def candidates(self, ctx: RecommendContext) -> SourceResult | None:
        vector = ctx.query_vector if self.use == "query" else ctx.profile_vector
        if vector is None:
            return None
        hits = self.catalogue.store.search_dense(
            self.catalogue.collection, vector, ctx.pool, ctx.item_filter, ctx.exclude
        )
        weight = self.without_query_weight if self.use == "profile" and not ctx.query_text else self.weight
        return SourceResult(self.name, rank_hits(hits), weight)


class LexicalSource:
    """BM25 over item text: the query's words, else the titles of the newest history items, else
    the user's stated preferences. ``history_weight`` (default: ``weight``) is its weight when it
    reads history titles: a fine-tuned encoder is chosen with its own balance for those requests
    (``train_encoder``), which says nothing about how words should weigh against a search query."""

    name = "lexical"

    def __init__(self, catalogue: Catalogue, weight: float = 1.0, history_weight: float | None = None):
        self.catalogue, self.weight = catalogue, weight
        self.history_weight = weight if history_weight is None else history_weight

    def candidates(self, ctx: RecommendContext) -> SourceResult | None:
        from_history = not ctx.query_text and bool(ctx.history_titles)
        text = ctx.query_text or " ".join(ctx.history_titles) or ctx.preference_text
        if not text:
            return None
        sparse = self.catalogue.bm25.encode_query(text)
        hits = self.catalogue.store.search_sparse(
            self.catalogue.collection, sparse, ctx.pool, ctx.item_filter, ctx.exclude
        )
        return SourceResult(self.name, rank_hits(hits), self.history_weight if from_history else self.weight)


def _keep_matching(catalogue: Catalogue, ranked: list[tuple[str, float]], ctx: RecommendContext, limit: int):
    ranked = [(i, s) for i, s in ranked if i not in ctx.exclude]
    # One store round trip checks existence (deleted items drop out) and the hard filters.
    allowed = catalogue.store.matching_ids(catalogue.collection, [i for i, _ in ranked], ctx.item_filter)
    return [(i, s) for i, s in ranked if i in allowed][:limit]


class CollaborativeSource:
    """Item-kNN on co-occurrence. Has an opinion only about items someone interacted with."""

    name = "collaborative"

    def __init__(self, catalogue: Catalogue, index: CoOccurrenceIndex, weight: float = 1.0, decay: float = 0.8,
                 proximity: float = 0.0, backward: float = 1.0):
        self.catalogue, self.index, self.weight, self.decay = catalogue, index, weight, decay
        self.proximity, self.backward = proximity, backward

    def candidates(self, ctx: RecommendContext) -> SourceResult | None:
        if not ctx.history:
            return None
        scores = self.index.neighbours(ctx.history, decay=self.decay, limit=ctx.pool * 2,
                                       proximity=self.proximity, backward=self.backward,
                                       leave_out=ctx.leave_out_user)
        ranked = _keep_matching(self.catalogue, list(scores.items()), ctx, ctx.pool)
        leave_out = ctx.leave_out_user
        return SourceResult(self.name, ranked, self.weight, knows=lambda i: self.index.knows(i, leave_out))


# The most items of a category read from the store per read; a larger category is read from the
# catalogue's most taken items instead (the ones a popularity prior or an audience would use first).
CATEGORY_ITEMS = 2000


class CategoryItems:
    """The ids of a catalogue category's items, read from the store (ids only) once per catalogue
    change (``Catalogue.generation``: an upsert or a delete, here or by another instance). Where a
    category has more than ``CATEGORY_ITEMS`` items, those among the catalogue's ``CATEGORY_ITEMS``
    most taken, read on every call (what people take changes without a write).

    Example::

        CategoryItems(catalogue, index).ids("Staplers")
    """

    def __init__(self, catalogue: Catalogue, index: CoOccurrenceIndex):
        self.catalogue, self.index = catalogue, index
        self._read: dict[str, tuple[int, list[str]]] = {}  # category -> (the generation read at, ids)

    def ids(self, category: str) -> list[str]:
        # Read before the store: a write between the two leaves an older number, so it is read again.
        generation = self.catalogue.generation
        cached = self._read.get(category)
        if cached is not None and cached[0] == generation:
            return cached[1]
        named = ItemFilter(categories=(category,))
        ids, more = self.catalogue.store.scroll_ids(self.catalogue.collection, limit=CATEGORY_ITEMS, flt=named)
        if more is None:
            self._read[category] = (generation, ids)
            return ids
        popular = [i for i, _ in self.index.popular(CATEGORY_ITEMS)]
        found = self.catalogue.store.matching_ids(self.catalogue.collection, popular, named)
        return [i for i in popular if i in found]


class InterestSource:
    """For stated preferences that name catalogue categories (``ctx.stated_categories``): what the
    people who took those categories took, by how much more often they took it than everyone did
    (``CoOccurrenceIndex.audience_scores``). The first category named counts most, each next one
    ``category_decay`` times the one before. It can propose items of other categories that the
    same people take alongside (paper for a printer), and it answers alone where no other source
    does. A category's items are read from the store once per catalogue change; its audience is
    cached by the index.

    Example::

        ctx.stated_categories = ("Labels", "Binders")
        InterestSource(catalogue, index).candidates(ctx)
    """

    name = "interest"

    def __init__(self, catalogue: Catalogue, index: CoOccurrenceIndex, weight: float = 1.0,
                 lift: float = 0.75, category_decay: float = 0.7, categories: CategoryItems | None = None):
        self.catalogue, self.index, self.weight = catalogue, index, weight
        self.lift, self.category_decay = lift, category_decay
        self.categories = categories or CategoryItems(catalogue, index)

    @staticmethod
    def audience_key(category: str) -> str:
        """The key the index caches a category's audience under."""
        return f"category:{category}"

    def candidates(self, ctx: RecommendContext) -> SourceResult | None:
        if not ctx.stated_categories:
            return None
        groups = [(self.audience_key(category), self.category_decay**rank, self.categories.ids(category))
                  for rank, category in enumerate(ctx.stated_categories)]
        scores = self.index.audience_scores(groups, limit=ctx.pool * 2 + len(ctx.exclude), lift=self.lift)
        ranked = _keep_matching(self.catalogue, list(scores.items()), ctx, ctx.pool)
        if not ranked:
            return None
        # Like co-occurrence, it cannot rank an item nobody took: the fusion gives such an item its
        # mean from the sources that can, so a new item stays reachable.
        return SourceResult(self.name, ranked, self.weight, knows=self.index.knows)


class PopularSource:
    """Most-interacted items; for requests with nothing else to go on. Falls back to catalogue
    order while nobody has interacted with anything yet.

    ``within`` ranks the items of some categories instead: for a request of stated preferences
    alone that names catalogue categories, what people take among the things asked for rather than
    across the catalogue (``RecommendConfig.preference_prior_within_categories``)."""

    name = "popular"

    def __init__(self, catalogue: Catalogue, index: CoOccurrenceIndex, weight: float = 1.0,
                 fallback: bool = True, name: str = "popular", categories: CategoryItems | None = None):
        self.catalogue, self.index, self.weight, self.fallback, self.name = catalogue, index, weight, fallback, name
        self.categories = categories or CategoryItems(catalogue, index)

    def candidates(self, ctx: RecommendContext) -> SourceResult | None:
        ranked = _keep_matching(
            self.catalogue, [(i, float(n)) for i, n in self.index.popular(ctx.pool * 2)], ctx, ctx.pool
        )
        if not self.fallback:
            return SourceResult(self.name, ranked, self.weight) if ranked else None
        if len(ranked) < ctx.pool:
            ids, _ = self.catalogue.store.scroll_ids(
                self.catalogue.collection, limit=ctx.pool + len(ctx.exclude), flt=ctx.item_filter
            )
            taken = {i for i, _ in ranked}
            ranked += [(i, 0.0) for i in ids if i not in taken and i not in ctx.exclude]
        return SourceResult(self.name, ranked[: ctx.pool], self.weight)

    def within(self, ctx: RecommendContext, categories: tuple[str, ...]) -> SourceResult | None:
        """The items of ``categories`` that someone took, most taken first (ties by id), through the
        request's own filter and exclusions; None if nobody took any. Each category is read as
        ``CategoryItems`` reads it (the ``CATEGORY_ITEMS`` bound is per category)."""
        ids = list(dict.fromkeys(i for category in categories for i in self.categories.ids(category)))
        counts = self.index.user_counts(ids)
        ranked = sorted(((i, float(n)) for i, n in counts.items() if n > 0), key=lambda kv: (-kv[1], kv[0]))
        ranked = _keep_matching(self.catalogue, ranked, ctx, ctx.pool)
        return SourceResult(self.name, ranked, self.weight) if ranked else None


def sequence_vector(catalogue: Catalogue, model: SequenceModel | None, history: Sequence[str]) -> np.ndarray | None:
    """``model``'s vector for the history (oldest first; the newest ``max_length`` items read), or
    None without a model or a known item. The sequence source searches with it; a ranker trained
    with a sequence encoder compares it with each candidate."""
    if model is None or not history:
        return None
    recent = list(history)[-model.shape.max_length:]
    vector = model.encode([recent], catalogue.vectors(recent))[0]
    return vector if vector.any() else None


@dataclass(frozen=True)
class LoadedSequence:
    """A sequence encoder version as it serves: the model, its fusion weight (chosen with it on
    validation) and its metadata."""

    version: str
    model: SequenceModel
    weight: float
    metadata: dict[str, Any] = field(default_factory=dict)


class SequenceSource:
    """The items the sequence encoder expects next: the history, in order, read by a transformer
    into one vector, searched in the item collection (filters and exclusions applied there).
    Answers nothing until a trained model is served (``Engine.serve_sequence``); a model is swapped
    as a whole, so a request sees the old one or the new one."""

    name = "sequence"

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.loaded: LoadedSequence | None = None

    def vector(self, history: list[str], loaded: LoadedSequence | None):
        """``loaded``'s vector for ``history`` (None without a model or a known item)."""
        return sequence_vector(self.catalogue, loaded.model if loaded is not None else None, history)

    def candidates(self, ctx: RecommendContext) -> SourceResult | None:
        loaded = self.loaded  # read once: the vector and the weight come from the same version
        vector = self.vector(ctx.history, loaded)
        if vector is None:
            return None
        hits = self.catalogue.store.search_dense(self.catalogue.collection, vector, ctx.pool, ctx.item_filter,
                                                 ctx.exclude)
        return SourceResult(self.name, rank_hits(hits), loaded.weight)
