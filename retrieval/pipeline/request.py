"""What goes into the recommend pipeline and what comes out: the public request, the options only
trainers, the evaluation and the explanations' counterfactual use, and the typed per-item trace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from retrieval.pipeline.fusion import SourceRank
from retrieval.storage.vector_store import ItemFilter


@dataclass
class RecommendRequest:
    """One recommendation request, as the API and the CLI send it.

    >>> RecommendRequest(user_id="u1", query="quiet keyboard under $50").k
    10
    """

    user_id: str | None = None
    query: str | None = None
    history: list[str] = field(default_factory=list)
    k: int = 10
    item_filter: ItemFilter | None = None
    exclude_seen: bool = True
    rerank: bool = True  # use the accepted reranker, if there is one
    diversity: float | None = None  # 0 = pure relevance .. 1; None = the configured default
    max_per_category: int | None = None  # at most this many items of one (leaf) category
    understand_query: bool = True  # parse constraints and an anchor item out of ``query``
    # Never in the list whatever ``exclude_seen`` says: the item a query named ("like X": X itself).
    never_show: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplayOptions:
    """How trainers, the evaluation and the explanations' counterfactual run the pipeline off the
    public path; a served request always runs with the defaults."""

    sources: tuple[str, ...] | None = None  # only these candidate sources (evaluation, debugging)
    # Fuse as the pool a ranker reorders (``RecommendConfig.ranker_pool_weights``) even where no
    # ranker is applied: the ranker's trainer builds its lists with it.
    ranker_pool: bool = False
    # Retrieval as if this user's own logged events did not exist: how the trainers build examples
    # from the log without the user's future (the positive) leaking into their candidates.
    leave_out_user: str | None = None
    # The history as if these items had never been seen (profile, co-occurrence, titles): the
    # explanations' counterfactual runs the same request with and without its top evidence item.
    without_items: tuple[str, ...] = ()


class RankDriver(msgspec.Struct):
    """A group of the ranker's features and its effect on one item's score (``ranking.drivers``)."""

    evidence: str  # collaborative, popularity, profile, words, retrieval_place, newest_items, price, ...
    effect: float  # the item's score minus its score with this group at the list's typical values


class RerankTrace(msgspec.Struct):
    """What the learned ranker did to an item."""

    rank: int  # place in the reranked list
    score: float
    retrieval_rank: int  # place in the fused list it reordered
    kept_place: bool  # no collaborative opinion: the item kept retrieval's place
    drivers: list[RankDriver] = []


class DiversityTrace(msgspec.Struct):
    """Where diversity (MMR) moved an item."""

    relevance_rank: int
    rank: int
    moved: int
    max_similarity_to_above: float


class ItemTrace(msgspec.Struct):
    """Why an item is in a list: each source's rank, score and share of the fused score, the sources
    with no opinion about it, and what reranking and diversity did."""

    sources: dict[str, SourceRank]
    no_opinion: list[str]
    rerank: RerankTrace | None = None
    diversity: DiversityTrace | None = None


@dataclass
class RecommendedItem:
    id: str
    score: float
    payload: dict[str, Any]
    trace: ItemTrace


@dataclass
class RecommendResult:
    items: list[RecommendedItem]
    sources: list[str]
    profile: str  # where the profile vector came from: stored | computed | none
    notes: list[str]
    took_ms: float
    reranker: str | None = None  # version of the model that reordered the list, if any
    sequence: str | None = None  # version of the sequence encoder whose source answered, if any
    interpreted: dict[str, Any] | None = None  # how ``query`` was understood
    timings: dict[str, float] = field(default_factory=dict)  # seconds per pipeline step

