"""The rerank stage of the pipeline: a trained cross-encoder reorders the top of the fused list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.cross_encoder import CrossEncoderReranker

RRF_K = 60


@dataclass
class LoadedReranker:
    """An accepted model, ready to serve (see ``reranker_training.RerankerVersions.load``)."""

    version: str
    model: CrossEncoderReranker
    blend: float  # weight of the reranker's rank against the retrieval rank, chosen on validation
    metadata: dict[str, Any]


def combine(retrieval_ids: list[str], scores: np.ndarray, blend: float) -> list[tuple[str, int, float]]:
    """Reorder by ``1/(k + retrieval rank) + blend / (k + reranker rank)``; returns
    (id, reranker rank, combined score), best first. Rank fusion is immune to the scale of the
    cross-encoder's logits, which changes from one trained model to the next.

    >>> [i for i, _, _ in combine(["a", "b", "c"], np.array([0.1, 0.2, 9.0]), blend=4.0)]
    ['c', 'b', 'a']
    """
    order = np.argsort(-scores, kind="stable")
    rerank_rank = np.empty(len(order), dtype=int)
    rerank_rank[order] = np.arange(1, len(order) + 1)
    combined = [(i, int(rerank_rank[n]), 1.0 / (RRF_K + n + 1) + blend / (RRF_K + rerank_rank[n]))
                for n, i in enumerate(retrieval_ids)]
    return sorted(combined, key=lambda x: (-x[2], x[0]))
