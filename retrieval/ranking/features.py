"""What the learned ranker reads about one candidate: the retrieval's own evidence, as numbers.

Training and serving build features with this one function, from the same trace the pipeline
keeps for every candidate, so a model never sees a feature computed differently from how it was
trained. Every feature is about the candidate *in this request*: its place in the fused list, each
source's rank and score, how many people took it, and how it relates to the user's newest items
(vector similarity, same leaf category, same brand, price ratio). Two columns are filled only when
the ranker has the model behind them, NaN otherwise (the trees handle missing values): the
cross-encoder's score, and the sequence encoder's similarity (its vector for the history against
the candidate's, for every candidate, whether or not the sequence source listed it).

Example::

    rows = candidate_features(candidates, candidate_points, recent_points, popularity, history_length=7)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from retrieval.pipeline.fusion import FusedCandidate
from retrieval.storage.vector_store import StoredPoint

SOURCES = ("dense_profile", "lexical", "collaborative", "sequence")
SOURCE_FEATURES = ("listed", "inverse_rank", "score_relative", "score")  # per source, in this order
RECENT_ITEMS = 3  # the newest history items the candidate is compared with

FEATURE_NAMES = (
    "fused_position_log", "fused_score_relative",
    *(f"{s}_{what}" for s in SOURCES for what in SOURCE_FEATURES),
    "collaborative_no_opinion", "popularity_log",
    "similarity_newest", "similarity_recent_max",
    "same_category_newest", "category_share_recent", "same_brand_newest",
    "price_ratio_log_newest", "price_unknown",
    "history_length_log",
    "sequence_similarity",
    "cross_encoder",
)
CROSS_ENCODER_COLUMN = FEATURE_NAMES.index("cross_encoder")
SEQUENCE_COLUMN = FEATURE_NAMES.index("sequence_similarity")
# Columns a model reads only if it was trained with the model that fills them.
OPTIONAL_COLUMNS = ("sequence_similarity", "cross_encoder")
NO_OPINION_COLUMN = FEATURE_NAMES.index("collaborative_no_opinion")


def _leaf(point: StoredPoint) -> str | None:
    return (point.payload.get("categories") or [None])[-1]


def candidate_features(candidates: Sequence[FusedCandidate], points: Mapping[str, StoredPoint],
                       recent: Sequence[StoredPoint], popularity: Mapping[str, int], history_length: int,
                       sequence_vector: np.ndarray | None = None) -> np.ndarray:
    """One row of ``FEATURE_NAMES`` per candidate, in the fused order given; the cross-encoder's
    column is left NaN (``rerank.with_cross_encoder`` fills it where a cross-encoder serves), and
    so is the sequence column without ``sequence_vector`` (the ranker's sequence encoder's vector
    for this history).

    ``points`` holds the candidates with their vectors, ``recent`` the newest history items (newest
    first, with vectors), ``popularity`` how many users took each candidate (without the user being
    trained on, or the positive would count itself).
    """
    rows = np.zeros((len(candidates), len(FEATURE_NAMES)), dtype=np.float32)
    if not candidates:
        return rows
    top_score = candidates[0].score or 1.0
    best = {s: max((c.sources[s].score if s in c.sources else 0.0 for c in candidates), default=0.0) or 1.0
            for s in SOURCES}
    recent = [p for p in recent[:RECENT_ITEMS] if p.vector is not None]
    recent_vectors = np.stack([p.vector for p in recent]) if recent else None
    newest = recent[0] if recent else None
    recent_leaves = [_leaf(p) for p in recent]
    newest_price = newest.payload.get("price") if newest else None
    for n, cand in enumerate(candidates):
        point = points[cand.id]
        row = [math.log(n + 1), cand.score / top_score]
        for s in SOURCES:
            hit = cand.sources.get(s)
            row += [1.0, 1.0 / hit.rank, hit.score / best[s], hit.score] if hit else [0.0] * 4
        row += [float("collaborative" in cand.no_opinion), math.log1p(popularity.get(cand.id, 0))]
        if recent_vectors is not None and point.vector is not None:
            sims = recent_vectors @ np.asarray(point.vector, dtype=np.float32)
            row += [float(sims[0]), float(sims.max())]
        else:
            row += [0.0, 0.0]
        leaf = _leaf(point)
        row += [float(bool(recent) and leaf == recent_leaves[0]),
                sum(leaf == c for c in recent_leaves) / len(recent_leaves) if recent_leaves else 0.0,
                float(bool(newest) and bool(point.payload.get("brand"))
                      and point.payload.get("brand") == newest.payload.get("brand"))]
        price = point.payload.get("price")
        known = bool(price) and bool(newest_price)
        row += [math.log(price / newest_price) if known else 0.0, 0.0 if known else 1.0]
        row += [math.log1p(history_length)]
        row.append(float(sequence_vector @ np.asarray(point.vector, dtype=np.float32))
                   if sequence_vector is not None and point.vector is not None else float("nan"))
        row.append(float("nan"))
        rows[n] = row
    return rows


def rank_candidates(items: Sequence[Any]) -> list[FusedCandidate]:
    """The fused candidates behind pipeline results (``RecommendedItem``: id, score, trace)."""
    return [FusedCandidate(i.id, i.score, i.trace.sources, list(i.trace.no_opinion)) for i in items]
