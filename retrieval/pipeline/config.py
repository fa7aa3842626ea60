"""The recommend pipeline's settings: fusion weights, pool sizes, diversity defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SOURCE_NAMES = ("dense_query", "dense_profile", "lexical", "collaborative", "popular")


@dataclass(frozen=True)
class RecommendConfig:
    """Fusion settings. Weights are per source; see ``fusion.fuse`` for ``no_opinion_credit``.

    The defaults were chosen on the validation split of the shared dataset, never on test
    (``benchmarks/tune.py``, ``benchmarks/diversity.py``; docs/research.md says why each one).
    """

    # ``lexical_history`` (BM25 over the newest history titles; default: ``lexical``) and
    # ``dense_profile_without_query`` (the profile vector in a request without a query; default:
    # ``dense_profile``) are set by a fine-tuned encoder's layout, chosen with it on validation
    # (``train_encoder``).
    weights: dict[str, float] = field(default_factory=lambda: {
        "dense_query": 1.0, "dense_profile": 0.5, "lexical": 1.0, "collaborative": 1.0, "popular": 1.0,
    })
    rrf_k: int = 60
    no_opinion_credit: float = 1.0
    min_pool: int = 100
    lexical_history_items: int = 3
    collaborative_decay: float = 0.8
    collaborative_proximity: float = 1.0
    collaborative_backward: float = 0.5
    sources: tuple[str, ...] = ("dense_query", "dense_profile", "lexical", "collaborative")
    # How much of the top of the fused list the reranker reorders: each candidate costs feature
    # work (and a cross-encoder pair where one serves) on every request.
    rerank_candidates: int = 50
    # A profile made only of stated preferences (no history, no query) gets popularity as a weak
    # prior: a sentence alone says little about which of its matches people take (the
    # cold_users_prefs slice of ``make eval``).
    preference_popularity_prior: float = 0.5
    # MMR strength when a request does not say: the most diverse setting with no NDCG@10 loss on
    # validation (benchmarks/diversity.py).
    diversity: float = 0.3
    # The same rule for lists the learned ranker ordered: there every MMR step cost NDCG@10 and
    # cold items, and the ranker's lists are already more diverse than retrieval's
    # (benchmarks/diversity.py).
    reranked_diversity: float = 0.0
    diversity_pool: int = 50  # how much of the top the diverse list is picked from
    # The fusion of the pool a learned ranker reorders (history requests); None: ``weights``. Set by
    # ``with_weights``, which tunes the order served as is and leaves the pool as it was.
    ranker_pool_weights: dict[str, float] | None = None

    def with_weights(self, overrides: dict[str, float] | None) -> RecommendConfig:
        """These settings with some source weights replaced for the retrieval order served as is (a
        layout's, an encoder's choice); the pool a ranker reorders keeps the weights it had.

        Why the two differ: ``train_encoder`` picks its weights by the fused top 10, and a ranker
        wants a pool it can pick from; a ranker over the reweighted pool did worse than one over
        the configured pool (docs/research.md).
        """
        if not overrides:
            return self
        pool = self.weights if self.ranker_pool_weights is None else self.ranker_pool_weights
        return replace(self, weights={**self.weights, **overrides}, ranker_pool_weights=dict(pool))


def source_weights(weights: dict[str, float]) -> dict[str, float]:
    """Every weight a source reads, with its default: 1.0, BM25's over history titles
    (``lexical_history``) that of ``lexical``, and the profile's in a request without a query
    (``dense_profile_without_query``) that of ``dense_profile``.

    >>> source_weights({"lexical": 0.5})["lexical_history"]
    0.5
    """
    out = {name: weights.get(name, 1.0) for name in SOURCE_NAMES}
    return {**out, "lexical_history": weights.get("lexical_history", out["lexical"]),
            "dense_profile_without_query": weights.get("dense_profile_without_query", out["dense_profile"])}
