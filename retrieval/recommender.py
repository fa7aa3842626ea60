"""The recommend pipeline: context -> candidate sources -> fusion -> hydrated items with a trace.

The API, the CLI and the evaluation all call ``Recommender.recommend``; there is no other path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from retrieval.catalogue import Catalogue
from retrieval.cooccurrence import CoOccurrenceIndex
from retrieval.diversity import diversify
from retrieval.fusion import fuse
from retrieval.profiles import Profiles
from retrieval.query_understanding import Anchor, ParsedQuery, QueryParser
from retrieval.records import InvalidRecord
from retrieval.rerank import LoadedReranker, rank_drivers, rank_inputs, rerank
from retrieval.sources import CollaborativeSource, DenseSource, LexicalSource, PopularSource, RecommendContext
from retrieval.store import ItemFilter

MAX_K = 100


@dataclass(frozen=True)
class RecommendConfig:
    """Fusion settings. Weights are per source; see ``fusion.fuse`` for ``no_opinion_credit``.

    The defaults were chosen on the validation split of the shared dataset (benchmarks/tune.py;
    numbers in benchmarks/README.md), never on test.
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
    # How much of the top of the fused list the reranker reorders. Measured on validation (shared
    # dataset, ranker trained on lists of that length): 50 -> NDCG@10 .0844, coverage@10 .613;
    # 100 -> .0845, .594 at twice the feature work (and twice the cross-encoder pairs where one serves).
    rerank_candidates: int = 50
    # A profile made only of stated preferences (no history, no query) gets popularity as a weak
    # prior: validation on cold_users_prefs, NDCG@10 .0093 -> .0101 (BM25 alone .0094).
    preference_popularity_prior: float = 0.5
    # MMR strength when a request does not say, chosen on validation (benchmarks/diversity.py): the
    # most diverse setting with no NDCG@10 loss there; on test -1.9% NDCG@10, +11% intra-list diversity.
    diversity: float = 0.3
    # The same rule for lists the learned ranker ordered (benchmarks/diversity.py, ranker trained on
    # the training part): every MMR step costs NDCG@10 on validation (2,000 users: .0728 at 0, .0721
    # at .1, .0712 at .2, .0701 at .3), and the ranker's lists are already more diverse than
    # retrieval's at 0.3 (ILD@10 .515 vs .480): it mixes what people took next with look-alikes.
    # MMR on top also cost cold items, which the ranker keeps in place (test: .0860 at 0, .0772 at .3).
    reranked_diversity: float = 0.0
    diversity_pool: int = 50  # how much of the top the diverse list is picked from
    # The fusion of the pool a learned ranker reorders (history requests); None: ``weights``. Set by
    # ``with_weights``, which tunes the order served as is and leaves the pool as it was.
    ranker_pool_weights: dict[str, float] | None = None

    def with_weights(self, overrides: dict[str, float] | None) -> RecommendConfig:
        """These settings with some source weights replaced for the retrieval order served as is (a
        layout's, an encoder's choice); the pool a ranker reorders keeps the weights it had.

        Why the two differ: ``train_encoder`` picks its weights by the fused top 10, and a ranker
        wants a pool it can pick from. On the shared dataset (every user, test and validation
        split, ranker trained on each pool) BM25 over the history at 0.5 lifted retrieval NDCG@10
        by +0.0031 / +0.0032 (about 3 standard errors) but a ranker over that pool lost -0.0032 /
        +0.0001 on all users and -0.0003 / -0.0088 on cold items against one over the pool at 1.0.
        """
        if not overrides:
            return self
        pool = self.weights if self.ranker_pool_weights is None else self.ranker_pool_weights
        return replace(self, weights={**self.weights, **overrides}, ranker_pool_weights=dict(pool))


def source_weights(weights: dict[str, float]) -> dict[str, float]:
    """Every weight a source reads, with its default: 1.0, BM25's over history titles
    (``lexical_history``) that of ``lexical``, and the profile's in a request without a query
    (``dense_profile_without_query``) that of ``dense_profile``."""
    out = {name: weights.get(name, 1.0)
           for name in ("dense_query", "dense_profile", "lexical", "collaborative", "popular")}
    return {**out, "lexical_history": weights.get("lexical_history", out["lexical"]),
            "dense_profile_without_query": weights.get("dense_profile_without_query", out["dense_profile"])}


@dataclass
class RecommendRequest:
    user_id: str | None = None
    query: str | None = None
    history: list[str] = field(default_factory=list)
    k: int = 10
    item_filter: ItemFilter | None = None
    exclude_seen: bool = True
    sources: tuple[str, ...] | None = None  # restrict to these sources (evaluation, debugging)
    rerank: bool = True  # use the accepted reranker, if there is one
    # Fuse as the pool a ranker reorders (``RecommendConfig.ranker_pool_weights``) even where no
    # ranker is applied: the ranker's trainer builds its lists with it.
    ranker_pool: bool = False
    # Retrieval as if this user's own logged events did not exist: how the trainers build examples
    # from the log without the user's future (the positive) leaking into their candidates.
    leave_out_user: str | None = None
    diversity: float | None = None  # 0 = pure relevance .. 1; None = the configured default
    max_per_category: int | None = None  # at most this many items of one (leaf) category
    understand_query: bool = True  # parse constraints and an anchor item out of ``query``
    # The history as if these items had never been seen (profile, co-occurrence, titles): the
    # explanations' counterfactual runs the same request with and without its top evidence item.
    without_items: tuple[str, ...] = ()


@dataclass
class RecommendedItem:
    id: str
    score: float
    payload: dict[str, Any]
    trace: dict[str, Any]


@dataclass
class RecommendResult:
    items: list[RecommendedItem]
    sources: list[str]
    profile: str
    notes: list[str]
    took_ms: float
    reranker: str | None = None  # version of the model that reordered the list, if any
    interpreted: dict[str, Any] | None = None  # how ``query`` was understood


class Recommender:
    """Fused hybrid recommendations for a user, a query, an ad-hoc history, or any mix.

    Example::

        recommender.recommend(RecommendRequest(user_id="u1", query="quiet keyboard", k=10))
    """

    def __init__(self, catalogue: Catalogue, profiles: Profiles, index: CoOccurrenceIndex,
                 config: RecommendConfig = RecommendConfig()):
        self.catalogue = catalogue
        self.profiles = profiles
        self.config = config
        w = source_weights(config.weights)
        self.sources = {
            "dense_query": DenseSource(catalogue, "dense_query", "query", w["dense_query"]),
            "dense_profile": DenseSource(catalogue, "dense_profile", "profile", w["dense_profile"],
                                         w["dense_profile_without_query"]),
            "lexical": LexicalSource(catalogue, w["lexical"], w["lexical_history"]),
            "collaborative": CollaborativeSource(
                catalogue, index, w["collaborative"], decay=config.collaborative_decay,
                proximity=config.collaborative_proximity, backward=config.collaborative_backward),
        }
        self.popular = PopularSource(catalogue, index, w["popular"])
        # Each source result's weight in the pool a ranker reorders. A ranker reorders history
        # requests only, so BM25's is its history weight and the profile's its weight without a query.
        pool = None if config.ranker_pool_weights is None else source_weights(config.ranker_pool_weights)
        self.pool_weights = None if pool is None else {**pool, "lexical": pool["lexical_history"],
                                                       "dense_profile": pool["dense_profile_without_query"]}
        self.popularity_prior = PopularSource(catalogue, index, config.preference_popularity_prior,
                                              fallback=False, name="popularity_prior")
        # Swapped as a whole by ``Engine.reload_reranker``: a request sees the old model or the new.
        self.reranker: LoadedReranker | None = None
        # Optional language-model suggestions for query constraints (see ``QueryParser``).
        self.query_suggest = None
        self._parser: QueryParser | None = None  # rebuilt when the catalogue's facets change

    def _validate(self, req: RecommendRequest) -> None:
        if not isinstance(req.k, int) or not 1 <= req.k <= MAX_K:
            raise InvalidRecord("k", f"must be an integer between 1 and {MAX_K}")
        f = req.item_filter
        if f is not None:
            for name in ("price_min", "price_max"):
                value = getattr(f, name)
                if value is not None and value < 0:
                    raise InvalidRecord(f"filters.{name}", "must be >= 0")
            if f.price_min is not None and f.price_max is not None and f.price_min > f.price_max:
                raise InvalidRecord("filters.price_min", "is greater than filters.price_max")
        if req.query is not None and len(req.query) > 2000:
            raise InvalidRecord("query", "longer than 2000 characters")
        if req.history:
            known = self.catalogue.existing(req.history)
            for i, item_id in enumerate(req.history):
                if item_id not in known:
                    raise InvalidRecord(f"history[{i}]", f"unknown item {item_id!r}")
        if req.diversity is not None and not (isinstance(req.diversity, (int, float)) and 0 <= req.diversity <= 1):
            raise InvalidRecord("diversity", "must be a number between 0 and 1")
        if req.max_per_category is not None and (not isinstance(req.max_per_category, int) or req.max_per_category < 1):
            raise InvalidRecord("max_per_category", "must be an integer >= 1")
        if req.sources:
            unknown = set(req.sources) - set(self.sources) - {"popular"}
            if unknown:
                raise InvalidRecord("sources", f"unknown sources {sorted(unknown)}")

    def context(self, req: RecommendRequest) -> tuple[RecommendContext, str]:
        """Resolve the request into what the sources read: vectors, history, exclusions."""
        ctx = RecommendContext(pool=max(self.config.min_pool, 4 * req.k), item_filter=req.item_filter,
                               leave_out_user=req.leave_out_user)
        profile = "none"
        limit = self.profiles.config.max_events
        history: list[str] = []
        if req.user_id:
            # The co-occurrence index already holds the user's distinct items in order (the same
            # positive event types), so the hot path reads no events from the log.
            history = self.profiles.index.history(req.user_id)[-limit:]
            # Disliked items are never shown again, even with exclude_seen false.
            ctx.exclude |= self.profiles.log.user_item_ids(
                req.user_id, types=None if req.exclude_seen else ("dislike",))
        if req.history:
            # Each requested item once, at its latest position, after the user's own items.
            requested = list(reversed(dict.fromkeys(reversed(req.history))))
            requested_set = set(requested)
            history = [i for i in history if i not in requested_set] + requested
            if req.exclude_seen:
                ctx.exclude |= requested_set
        gone = set(req.without_items)
        if gone:
            history = [i for i in history if i not in gone]
        stated = self.profiles.log.preferences(req.user_id) if req.user_id else None
        if stated is not None and stated.preferences:
            ctx.preference_text = stated.preferences
        if req.history or gone:
            events = self.profiles.log.user_events(req.user_id, limit=limit) if req.user_id else []
            ctx.profile_vector = self.profiles.compute([e for e in events if e.item_id not in gone], stated,
                                                       extra_items=[i for i in req.history if i not in gone])
            profile = "computed" if ctx.profile_vector is not None else "none"
        elif req.user_id:
            ctx.profile_vector = self.profiles.vector(req.user_id)
            profile = "stored" if ctx.profile_vector is not None else "none"
        ctx.history = history
        if req.query and req.query.strip():
            ctx.query_text = req.query.strip()
            ctx.query_vector = self.profiles.texts.get(ctx.query_text)
        if history and not ctx.query_text:
            newest = history[-self.config.lexical_history_items:]
            payloads = self.catalogue.get_many(newest)
            ctx.history_titles = [payloads[i].payload["title"] for i in reversed(newest) if i in payloads]
        return ctx, profile

    def query_parser(self) -> QueryParser:
        facets = self.catalogue.facets()
        parser = self._parser
        if parser is None or parser.facets is not facets or parser.suggest is not self.query_suggest:
            parser = self._parser = QueryParser(facets, self.catalogue.find_by_title, self._last_item,
                                                self.query_suggest)
        return parser

    def _last_item(self, user_id: str) -> Anchor | None:
        history = self.profiles.index.history(user_id)
        point = self.catalogue.get(history[-1]) if history else None
        return Anchor(point.id, point.payload.get("title", ""), point.payload.get("price"), how="history") \
            if point is not None else None

    def understand(self, req: RecommendRequest) -> tuple[RecommendRequest, ParsedQuery | None]:
        """The request with its query's constraints and anchor applied (they narrow, never widen)."""
        if not (req.query and req.query.strip() and req.understand_query):
            return req, None
        parsed = self.query_parser().parse(req.query.strip(), user_id=req.user_id)
        if parsed.categories:
            self._confirm_categories(parsed)
        history = req.history
        if parsed.anchor is not None and parsed.anchor.id not in history:
            history = [*history, parsed.anchor.id]  # the anchor is the newest thing "in mind", never shown
        return replace(req, query=parsed.semantic or None, item_filter=parsed.item_filter(req.item_filter),
                       history=history), parsed

    def _confirm_categories(self, parsed: ParsedQuery, top: int = 20, share: float = 0.25) -> None:
        """A category word is a constraint only if the query is about it: "lamp for my desk" names
        "desk" but means lamps. Kept when at least ``share`` of the query's nearest items are in it."""
        # The semantic text's vector: the request encodes it anyway (cached), so this costs no encode.
        vector = self.profiles.texts.get(parsed.semantic or parsed.text)
        hits = self.catalogue.store.search_dense(self.catalogue.collection, vector, top)
        payloads = self.catalogue.get_many([h.id for h in hits])
        keys = [{c.lower() for c in (p.payload.get("categories") or ())} for p in payloads.values()]
        kept = []
        for category in parsed.categories:
            found = sum(category.lower() in k for k in keys) / max(1, len(keys))
            if found >= share:
                kept.append(category)
            else:
                parsed.notes.append(f"'{category}' is mentioned but the query is about something else "
                                    f"({found:.0%} of its nearest items are in it): not enforced")
                parsed.matched = [m for m in parsed.matched if m.lower() not in category.lower()]
        parsed.categories = kept

    def recommend(self, req: RecommendRequest) -> RecommendResult:
        started = time.perf_counter()
        self._validate(req)
        req, parsed = self.understand(req)
        ctx, profile = self.context(req)
        wanted = req.sources or self.config.sources
        results = []
        for name in wanted:
            source = self.sources.get(name)
            result = source.candidates(ctx) if source is not None else None
            if result is not None and result.ranked:
                results.append(result)
        notes = []
        preferences_only = ctx.profile_vector is not None and not ctx.history and not ctx.query_text
        if results and preferences_only and req.sources is None and self.config.preference_popularity_prior > 0:
            prior = self.popularity_prior.candidates(ctx)
            if prior is not None:
                results.append(prior)
        if not results or "popular" in wanted:
            results.append(self.popular.candidates(ctx))
            if len(results) == 1:
                notes.append("nothing known about this request: showing popular items")
        reranker = self.reranker if req.rerank else None
        if reranker is not None and (ctx.query_text or not ctx.history):
            # The ranker learned from histories without a search query; elsewhere its features
            # would be read outside what it was trained on, so retrieval's order stands.
            notes.append(f"reranker {reranker.version} not used: it ranks history-based requests without a query")
            reranker = None
        if self.pool_weights is not None and (reranker is not None or req.ranker_pool):
            results = [replace(r, weight=self.pool_weights.get(r.name, r.weight)) for r in results]
        fused = fuse(results, rrf_k=self.config.rrf_k, no_opinion_credit=self.config.no_opinion_credit)
        default_diversity = self.config.reranked_diversity if reranker is not None else self.config.diversity
        diversity = default_diversity if req.diversity is None else float(req.diversity)
        diverse = diversity > 0 or req.max_per_category is not None
        wanted_top = max(req.k, self.config.rerank_candidates) if reranker else req.k
        if diverse:
            wanted_top = max(wanted_top, min(self.config.diversity_pool, 3 * req.k))
        top = fused[:wanted_top]
        # One round trip: MMR needs the candidates' vectors, so they come with the payloads.
        payloads = self.catalogue.get_many([c.id for c in top],
                                           with_vectors=(diverse and diversity > 0) or reranker is not None)
        top = [c for c in top if c.id in payloads]  # deleted between retrieval and hydration
        traces = {c.id: {"sources": c.sources, "no_opinion": c.no_opinion} for c in top}
        scores = {c.id: c.score for c in top}
        reranked = reranker is not None and bool(top)
        if reranked:
            inputs = rank_inputs(self.catalogue, self.profiles.index, ctx.history, top, payloads, query=ctx.query_text, preferences=ctx.preference_text,
                                 texts=reranker.cross_encoder is not None)
            reranking = rerank(reranker, inputs)
            order = reranking.order
            retrieval_rank = {item_id: n for n, item_id in enumerate(inputs.ids, start=1)}
            for r in order:
                traces[r.id]["rerank"] = {"rank": r.place, "score": round(r.score, 6),
                                          "retrieval_rank": retrieval_rank[r.id], "kept_place": r.kept}
                scores[r.id] = r.score
            ids = [r.id for r in order]
            notes.append(f"reranked the top {len(top)} with {reranker.description} {reranker.version}"
                         + (f"; diversity {diversity:g}, the default for reranked lists (ask for more with "
                            f"'diversity')" if req.diversity is None else ""))
        else:
            ids = [c.id for c in top]
            if not req.rerank:
                notes.append("reranking turned off by the request")
            elif self.reranker is None:
                notes.append("no reranker trained yet: ranked by fused retrieval scores")
        if diverse and ids:
            vectors = {i: payloads[i].vector for i in ids if payloads[i].vector is not None}
            leaf = {i: (payloads[i].payload.get("categories") or [None])[-1] for i in ids}
            # MMR trades relevance against similarity on the scale it was tuned on: fused scores.
            # Read as relevance, the ranker's probabilities (far more skewed) and scores of ranks
            # (1/(k + rank): flatter than fused scores at the top) both made MMR reshuffle reranked
            # lists more than retrieval's, and items the ranker kept in place (cold ones) paid for it
            # (NDCG@10 on cold items, 4 seeded splits, diversity 0.3: retrieval .079, ranks .072).
            # So a reranked list enters MMR with the pool's fused scores, best first: retrieval's
            # relevance profile in the ranker's order.
            relevance = (sorted((c.score for c in top), reverse=True)[:len(ids)]
                         if reranked else [scores[i] for i in ids])
            picked = diversify(ids, relevance, vectors, diversity, req.k, leaf, req.max_per_category)
            for p in picked:
                traces[p.id]["diversity"] = {"relevance_rank": p.relevance_rank, "rank": p.rank,
                                             "moved": p.relevance_rank - p.rank,
                                             "max_similarity_to_above": round(p.max_similarity, 4)}
            ids = [p.id for p in picked]
            moved = sum(1 for p in picked if p.relevance_rank != p.rank)
            notes.append(f"diversity {diversity:g}" + (f", at most {req.max_per_category} per category"
                                                        if req.max_per_category else "") + f": {moved} items moved")
        ids = ids[: req.k]
        if reranked:
            # What drove the ranker's score, for the items served and moved by it (explanations name it).
            moved_by_ranker = [i for i in ids if i in retrieval_rank and not traces[i]["rerank"]["kept_place"]]
            found = rank_drivers(reranker.ranker, reranking.features, [retrieval_rank[i] - 1 for i in moved_by_ranker])
            for item_id, drivers in zip(moved_by_ranker, found):
                traces[item_id]["rerank"]["drivers"] = drivers
        items = [RecommendedItem(i, scores[i], payloads[i].payload, traces[i]) for i in ids]
        return RecommendResult(
            items=items,
            sources=[r.name for r in results],
            profile=profile,
            notes=notes,
            took_ms=(time.perf_counter() - started) * 1000,
            reranker=reranker.version if reranker is not None and items else None,
            interpreted=parsed.interpreted() if parsed is not None else None,
        )
