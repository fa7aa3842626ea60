"""Rank fusion that knows when a source has no opinion.

Plain reciprocal-rank fusion (RRF) gives an item nothing from a source that did not list it. For a
collaborative source that is wrong about a brand-new item: it did not rank the item low, it knows
nothing about it, and plain RRF sinks every cold item (docs/research.md, "Fusion and no opinion";
the cold-items slice of ``make eval``). So each source declares which items it can judge
(``knows``); for the others, its share of the weight is filled with the item's mean contribution
from the sources that can judge it, scaled by ``no_opinion_credit`` (1 = a fair average, 0 = plain
RRF). Every source's rank and score per item is kept as the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec


@dataclass
class SourceResult:
    """One candidate source's ranked list.

    ``knows(item_id)`` says whether the source could have ranked the item at all; ``None`` means
    it can judge every item (dense and lexical sources see the whole catalogue).
    """

    name: str
    ranked: list[tuple[str, float]]
    weight: float = 1.0
    knows: Callable[[str], bool] | None = None

    def ranks(self) -> dict[str, tuple[int, float]]:
        return {item_id: (rank, score) for rank, (item_id, score) in enumerate(self.ranked, start=1)}


class SourceRank(msgspec.Struct):
    """One source's opinion of one candidate: its rank there, its score, and what it added to the
    fused score."""

    rank: int
    score: float
    contribution: float


@dataclass
class FusedCandidate:
    id: str
    score: float
    sources: dict[str, SourceRank] = field(default_factory=dict)
    no_opinion: list[str] = field(default_factory=list)


def fuse(results: list[SourceResult], rrf_k: int = 60, no_opinion_credit: float = 1.0) -> list[FusedCandidate]:
    """Fuse ranked lists into one, best first; ties broken by id for determinism.

    >>> text = SourceResult("dense", [("new", 0.9), ("old", 0.8)])
    >>> collab = SourceResult("collaborative", [("old", 3.0)], knows=lambda i: i == "old")
    >>> [c.id for c in fuse([text, collab])]
    ['new', 'old']
    """
    results = [r for r in results if r.ranked and r.weight > 0]
    ranks = [r.ranks() for r in results]
    candidates: dict[str, FusedCandidate] = {}
    for result, rank_of in zip(results, ranks):
        for item_id in rank_of:
            if item_id not in candidates:
                candidates[item_id] = FusedCandidate(item_id, 0.0)
    total_weight = sum(r.weight for r in results)
    for item_id, cand in candidates.items():
        judged_weight = 0.0
        judged_sum = 0.0
        unjudged_weight = 0.0
        for result, rank_of in zip(results, ranks):
            if result.knows is not None and not result.knows(item_id):
                unjudged_weight += result.weight
                cand.no_opinion.append(result.name)
                continue
            judged_weight += result.weight
            hit = rank_of.get(item_id)
            if hit is not None:
                rank, score = hit
                contribution = result.weight / (rrf_k + rank)
                judged_sum += contribution
                cand.sources[result.name] = SourceRank(rank, round(score, 6), contribution)
        imputed = 0.0
        if unjudged_weight and judged_weight:
            imputed = no_opinion_credit * unjudged_weight * judged_sum / judged_weight
        cand.score = (judged_sum + imputed) / total_weight if total_weight else 0.0
    return sorted(candidates.values(), key=lambda c: (-c.score, c.id))
