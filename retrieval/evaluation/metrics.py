"""Offline ranking metrics for leave-one-out evaluation (one target item per user).

Every function takes the 1-based rank of the target in a ranked list (None when it is not in the
list), or the lists themselves for the beyond-accuracy metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


def target_rank(ranked: Sequence[str], target: str) -> int | None:
    """1-based position of ``target`` in ``ranked``, None if absent (ties are the list's order)."""
    for i, item in enumerate(ranked, start=1):
        if item == target:
            return i
    return None


def recall_at(rank: int | None, k: int) -> float:
    """With one relevant item, Recall@k is the hit rate."""
    return 1.0 if rank is not None and rank <= k else 0.0


def paired_difference(new: Sequence[float], old: Sequence[float]) -> tuple[float, float]:
    """Mean of ``new - old`` over the same cases, and the standard error of that mean.

    >>> paired_difference([1, 0], [0, 0])
    (0.5, 0.5)
    """
    diff = np.asarray(new, dtype=float) - np.asarray(old, dtype=float)
    if diff.size == 0:
        return 0.0, 0.0
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()), se


def ndcg_at(rank: int | None, k: int) -> float:
    """One relevant item: the ideal DCG is 1, so NDCG@k = 1 / log2(rank + 1)."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None, k: int | None = None) -> float:
    if rank is None or (k is not None and rank > k):
        return 0.0
    return 1.0 / rank


def coverage(lists: Sequence[Sequence[str]], catalogue_size: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    if catalogue_size <= 0:
        return 0.0
    return len({item for lst in lists for item in lst[:k]}) / catalogue_size


def intra_list_diversity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance among a list's item vectors (unit-normalised here)."""
    n = len(vectors)
    if n < 2:
        return 0.0
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    mean_sim = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - mean_sim)


def gini(lists: Sequence[Sequence[str]], catalogue: Sequence[str], k: int = 10) -> float:
    """Gini coefficient of exposure over the whole catalogue in top-k lists (0 = equal exposure,
    1 = one item gets everything). Items never shown count as zero exposure."""
    counts = Counter(item for lst in lists for item in lst[:k])
    x = np.sort(np.array([counts.get(item, 0) for item in catalogue], dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    index = np.arange(1, n + 1)
    return float((2 * (index * x).sum()) / (n * x.sum()) - (n + 1) / n)
