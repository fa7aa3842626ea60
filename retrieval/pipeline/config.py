"""The recommend pipeline's settings: fusion weights, pool sizes, diversity defaults."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# ``sequence`` fuses at the weight chosen with its trained model (``sources.LoadedSequence``);
# ``interest`` answers only stated preferences that name catalogue categories (``InterestSource``).
SOURCE_NAMES = ("dense_query", "dense_profile", "lexical", "collaborative", "popular", "sequence", "interest")
# What a request has to go on (``context.request_type``): a known user's history, an ad-hoc history
# without an account (an anonymous session), stated preferences alone, a search query, or nothing.
REQUEST_TYPES = ("history", "session", "preferences", "query", "none")
# A layout's weight for one situation (``with_weights``) and the source and request types it covers.
_SITUATION_WEIGHTS = {"lexical_history": ("lexical", ("history", "session")),
                      "dense_profile_without_query": ("dense_profile", ("history", "session", "preferences"))}


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
    # ``interest`` at 4 in the popularity prior's place: chosen on every validation user of the
    # cold_users_prefs slice of ``make eval``, ahead of BM25 alone and of the prior
    # (benchmarks/tune.py --round 6; docs/research.md, "Preferences alone").
    weights: dict[str, float] = field(default_factory=lambda: {
        "dense_query": 1.0, "dense_profile": 0.5, "lexical": 1.0, "collaborative": 1.0, "popular": 1.0,
        "interest": 4.0,
    })
    rrf_k: int = 60
    no_opinion_credit: float = 1.0
    min_pool: int = 100
    lexical_history_items: int = 3
    collaborative_decay: float = 0.8
    collaborative_proximity: float = 1.0
    collaborative_backward: float = 0.5
    # ``sequence`` answers only while a trained sequence encoder serves, ``interest`` only for stated
    # preferences alone that name catalogue categories.
    sources: tuple[str, ...] = ("dense_query", "dense_profile", "lexical", "collaborative", "sequence", "interest")
    # Source weights for one request type (``REQUEST_TYPES``), over the weights above, in the full
    # pipeline only (a request that names its sources keeps them as they are); a type not listed
    # fuses at the weights above. None by default: the weights that won validation for each type
    # (benchmarks/tune.py --round 5) did not hold on a second validation sample or on test, so
    # every type fuses at the weights above (docs/research.md, "Weights per request type"); nor did
    # BM25 up and the profile down for stated preferences alone (--round 6, "Preferences alone").
    request_weights: dict[str, dict[str, float]] = field(
        default_factory=dict,
        metadata={"help": "fusion weights per request type (history, session, preferences, query, none) over "
                          "recommend.weights, for the full pipeline; a layout's own weights win"})
    # How much of the top of the fused list the reranker reorders: each candidate costs feature
    # work (and a cross-encoder pair where one serves) on every request.
    rerank_candidates: int = 50
    # How much the interest source favours what sets a category's audience apart over what
    # everyone takes (``CoOccurrenceIndex.audience_scores``).
    interest_lift: float = 0.75
    # For a profile of stated preferences alone where the interest source has nothing to say (no
    # category named, nobody took them, or it is not among the sources), popularity is the prior:
    # a sentence alone says little about which of its matches people take. Where the sentence
    # names categories it counts the items in them only.
    preference_popularity_prior: float = 1.0
    preference_prior_within_categories: bool = True
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

        A layout's weight also wins over ``request_weights`` for the same source and request type:
        it was chosen with its encoder, the request-type weights with the bundled one.
        """
        if not overrides:
            return self
        pool = self.weights if self.ranker_pool_weights is None else self.ranker_pool_weights
        return replace(self, weights={**self.weights, **overrides}, ranker_pool_weights=dict(pool),
                       request_weights=_without_overridden(self.request_weights, overrides))


def _without_overridden(request_weights: dict[str, dict[str, float]],
                        overrides: dict[str, float]) -> dict[str, dict[str, float]]:
    """``request_weights`` less the (request type, source) pairs that ``overrides`` sets.

    >>> _without_overridden({"session": {"lexical": 2.0, "collaborative": 0.5}}, {"lexical_history": 0.5})
    {'session': {'collaborative': 0.5}}
    """
    covered = set()
    for name in overrides:
        source, types = _SITUATION_WEIGHTS.get(name, (name, REQUEST_TYPES))
        covered |= {(t, source) for t in types}
    return {t: {s: w for s, w in ws.items() if (t, s) not in covered} for t, ws in request_weights.items()}


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
