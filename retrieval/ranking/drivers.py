"""What drove the learned ranker's score for an item: the groups of its features that moved the
item most against a typical candidate of the same list (the explanations name them)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from retrieval.ranking.features import FEATURE_NAMES, SOURCE_FEATURES
from retrieval.ranking.model import RankingModel

# The evidence an explanation can name, as groups of the ranker's columns (every column but the
# history length, which is the same for a whole list).
DRIVER_GROUPS: dict[str, tuple[str, ...]] = {
    "collaborative": (*(f"collaborative_{w}" for w in SOURCE_FEATURES), "collaborative_no_opinion"),
    "popularity": ("popularity_log",),
    "profile": tuple(f"dense_profile_{w}" for w in SOURCE_FEATURES),
    "words": tuple(f"lexical_{w}" for w in SOURCE_FEATURES),
    "sequence": (*(f"sequence_{w}" for w in SOURCE_FEATURES), "sequence_similarity"),
    "retrieval_place": ("fused_position_log", "fused_score_relative"),
    "newest_items": ("similarity_newest", "similarity_recent_max", "same_category_newest", "category_share_recent",
                     "same_brand_newest"),
    "price": ("price_ratio_log_newest", "price_unknown"),
    "cross_encoder": ("cross_encoder",),
}
_GROUP_COLUMNS = {name: [FEATURE_NAMES.index(c) for c in cols] for name, cols in DRIVER_GROUPS.items()}


def rank_drivers(ranker: RankingModel, features: np.ndarray, rows: Sequence[int], top: int = 3) -> list[list[dict]]:
    """What drove the ranker's score for each of ``rows`` (indices into ``features``, one request's list).

    A group's effect is the item's score minus its score with that group's columns set to the
    list's medians: the same item with the evidence of a typical candidate of this request. Each
    group is measured alone (trees interact, so effects need not add up to the score). Returns, per
    row, the ``top`` largest effects by size: ``[{"evidence": "collaborative", "effect": 0.0213}, ...]``.
    ``history_length_log`` is the same for the whole list, so it never drives one item over another.
    """
    if not len(rows):
        return []
    groups = [(name, cols) for name, cols in _GROUP_COLUMNS.items()
              if name != "cross_encoder" or ranker.uses_cross_encoder]
    with warnings.catch_warnings():  # a column that is NaN throughout (no cross-encoder) has no median
        warnings.simplefilter("ignore", RuntimeWarning)
        typical = np.nanmedian(features, axis=0)
    variants = []
    for r in rows:
        variants.append(features[r])
        for _, cols in groups:
            v = features[r].copy()
            v[cols] = typical[cols]
            variants.append(v)
    scores = ranker.score(np.stack(variants)).reshape(len(rows), 1 + len(groups))
    out = []
    for s in scores:
        effects = [(name, float(s[0] - s[1 + g])) for g, (name, _) in enumerate(groups)]
        effects = sorted((e for e in effects if abs(e[1]) >= 5e-5), key=lambda e: -abs(e[1]))
        out.append([{"evidence": name, "effect": round(effect, 4)} for name, effect in effects[:top]])
    return out
