"""Diverse lists: maximal marginal relevance over item vectors, plus an optional per-category cap.

MMR picks, one at a time, the candidate with the best ``(1 - diversity) x relevance -
diversity x (highest cosine similarity to anything already picked)``; ``diversity = 0`` keeps the
relevance order exactly. Relevance is the pipeline's own score, min-max scaled over the pool, so
the knob means the same whatever the score's scale.

Example::

    picked = diversify(["a", "b", "c"], [3.0, 2.9, 1.0], vectors, diversity=0.3, k=2)
    [p.id for p in picked]   # e.g. ["a", "c"] when b is a near-copy of a
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Picked:
    id: str
    relevance_rank: int  # 1-based position in the relevance order
    rank: int  # 1-based position in the diverse list
    max_similarity: float  # to the items picked before it (0 for the first)


def diversify(ids: list[str], relevance: list[float], vectors: dict[str, np.ndarray], diversity: float, k: int,
              categories: dict[str, str | None] | None = None, max_per_category: int | None = None) -> list[Picked]:
    """Re-order ``ids`` (best first, scores in ``relevance``) into at most ``k`` picks.

    Items without a vector keep their relevance but count as dissimilar to everything. With a cap,
    an item whose category already has ``max_per_category`` picks is skipped while any other
    candidate is left; the list is then filled in relevance order (never shorter than the pool allows).
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be between 0 and 1")
    n = len(ids)
    if n == 0 or k <= 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    spread = rel.max() - rel.min()
    rel = (rel - rel.min()) / spread if spread > 0 else np.ones(n)
    dim = next((v.shape[0] for v in vectors.values()), 0)
    matrix = np.zeros((n, dim), dtype=np.float32)
    for i, item_id in enumerate(ids):
        v = vectors.get(item_id)
        if v is not None:
            matrix[i] = v / max(float(np.linalg.norm(v)), 1e-9)
    max_sim = np.zeros(n)
    chosen = np.zeros(n, dtype=bool)
    per_category: dict[str, int] = {}
    picked: list[Picked] = []
    while len(picked) < min(k, n):
        score = (1.0 - diversity) * rel - diversity * max_sim
        score[chosen] = -np.inf
        if max_per_category is not None and categories is not None:
            capped = np.array([per_category.get(categories.get(i) or "", 0) >= max_per_category
                               if categories.get(i) else False for i in ids])
            if (~chosen & ~capped).any():
                score[capped] = -np.inf
        best = int(np.argmax(score))  # ties: the more relevant (earlier) item
        chosen[best] = True
        picked.append(Picked(ids[best], best + 1, len(picked) + 1, float(max_sim[best])))
        if categories is not None and categories.get(ids[best]):
            cat = categories[ids[best]]
            per_category[cat] = per_category.get(cat, 0) + 1
        if dim:
            max_sim = np.maximum(max_sim, matrix @ matrix[best])
    return picked
