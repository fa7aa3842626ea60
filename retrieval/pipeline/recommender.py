"""The recommend pipeline as a sequence of named steps:

validate -> understand the query -> build the context -> gather candidates -> choose the ranker ->
fuse -> hydrate -> rerank -> diversify -> explain the ranker's drivers.

The API, the CLI, the explanations and the evaluation all call ``Recommender.recommend``; there is
no other path. Each step is a function of this module (or ``context.build_context``) with its own
test; ``Recommender`` holds what they share and calls them in order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from retrieval.limits import MAX_K, TEXT_MAX_CHARS
from retrieval.pipeline.config import SOURCE_NAMES, RecommendConfig, source_weights
from retrieval.pipeline.context import RecommendContext, build_context
from retrieval.pipeline.diversity import diversify
from retrieval.pipeline.fusion import FusedCandidate, SourceResult, fuse
from retrieval.pipeline.request import (
    DiversityTrace,
    ItemTrace,
    RankDriver,
    RecommendedItem,
    RecommendRequest,
    RecommendResult,
    ReplayOptions,
    RerankTrace,
)
from retrieval.pipeline.sources import (
    CategoryItems,
    CollaborativeSource,
    DenseSource,
    InterestSource,
    LexicalSource,
    PopularSource,
    SequenceSource,
)
from retrieval.query.parser import ParsedQuery
from retrieval.query.understanding import QueryUnderstanding, Suggest
from retrieval.ranking.drivers import rank_drivers
from retrieval.ranking.rerank import LoadedReranker, Reranking, rank_inputs, rerank
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.state.profiles import Profiles
from retrieval.storage.records import InvalidRecord
from retrieval.storage.vector_store import StoredPoint


def validate(req: RecommendRequest, options: ReplayOptions, catalogue: Catalogue, source_names: set[str]) -> None:
    """Step "validate": raise ``InvalidRecord`` naming the first bad field; nothing has run yet."""
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
    if req.query is not None and len(req.query) > TEXT_MAX_CHARS:
        raise InvalidRecord("query", f"longer than {TEXT_MAX_CHARS} characters")
    if req.history:
        known = catalogue.existing(req.history)
        for i, item_id in enumerate(req.history):
            if item_id not in known:
                raise InvalidRecord(f"history[{i}]", f"unknown item {item_id!r}")
    if req.diversity is not None and not (isinstance(req.diversity, (int, float)) and 0 <= req.diversity <= 1):
        raise InvalidRecord("diversity", "must be a number between 0 and 1")
    if req.max_per_category is not None and (not isinstance(req.max_per_category, int) or req.max_per_category < 1):
        raise InvalidRecord("max_per_category", "must be an integer >= 1")
    if options.sources:
        unknown = set(options.sources) - source_names
        if unknown:
            raise InvalidRecord("sources", f"unknown sources {sorted(unknown)}")


def apply_query(req: RecommendRequest, parsed: ParsedQuery) -> RecommendRequest:
    """Step "understand the query", second half: the request with its query's constraints and
    anchor applied (they narrow, never widen)."""
    history, never_show = req.history, req.never_show
    if parsed.anchor is not None:
        # The anchor is the newest thing "in mind", and never shown: asked for one like it, not it.
        never_show = (*never_show, parsed.anchor.id)
        if parsed.anchor.id not in history:
            history = [*history, parsed.anchor.id]
    return replace(req, query=parsed.semantic or None, item_filter=parsed.item_filter(req.item_filter),
                   history=history, never_show=never_show)


def reweigh(result: SourceResult, weights: dict[str, float]) -> SourceResult:
    """Step "gather candidates", per request type: ``result`` at the weight ``weights`` gives its
    source (``RecommendConfig.request_weights`` for the request's type), else as it came."""
    weight = weights.get(result.name)
    return result if weight is None else replace(result, weight=weight)


# A source's weights in each situation it serves (``config.source_weights``); off where all are 0.
_SITUATIONS = {"lexical": ("lexical", "lexical_history"),
               "dense_profile": ("dense_profile", "dense_profile_without_query")}


def sources_off(served: dict[str, float], pool: dict[str, float]) -> frozenset[str]:
    """The sources at weight 0 in every situation, in the order served and in a ranker's pool:
    not asked at all (a request type's own weight can still turn one on). ``sequence`` fuses at
    its model's weight, so it is never off here.

    >>> weights = {"interest": 0.0, "lexical": 0.0, "lexical_history": 0.5}
    >>> sorted(sources_off(weights, weights))
    ['interest']
    """
    return frozenset(name for name in SOURCE_NAMES if name != "sequence"
                     and all(served.get(s, 1.0) <= 0 and pool.get(s, 1.0) <= 0 for s in _SITUATIONS.get(name, (name,))))


def choose_ranker(reranker: LoadedReranker | None, ctx: RecommendContext, notes: list[str]) -> LoadedReranker | None:
    """Step "choose the ranker": the served ranker where it applies, else None (and a note why)."""
    if reranker is not None and (ctx.query_text or not ctx.history):
        # The ranker learned from histories without a search query; elsewhere its features
        # would be read outside what it was trained on, so retrieval's order stands.
        notes.append(f"reranker {reranker.version} not used: it ranks history-based requests without a query")
        return None
    return reranker


@dataclass(frozen=True)
class ListShape:
    """How much of the fused list the later steps need, and how diverse the list is to be."""

    diversity: float
    diverse: bool  # MMR or a per-category cap runs
    top: int  # fused candidates to hydrate

    @classmethod
    def of(cls, req: RecommendRequest, config: RecommendConfig, reranked: bool) -> ListShape:
        """
        >>> ListShape.of(RecommendRequest(k=10), RecommendConfig(), reranked=False)
        ListShape(diversity=0.3, diverse=True, top=30)
        """
        default = config.reranked_diversity if reranked else config.diversity
        diversity = default if req.diversity is None else float(req.diversity)
        diverse = diversity > 0 or req.max_per_category is not None
        top = max(req.k, config.rerank_candidates) if reranked else req.k
        if diverse:
            top = max(top, min(config.diversity_pool, 3 * req.k))
        return cls(diversity, diverse, top)


def hydrate(catalogue: Catalogue, fused: list[FusedCandidate], shape: ListShape,
            with_vectors: bool) -> tuple[list[FusedCandidate], dict[str, StoredPoint]]:
    """Step "hydrate": the top of the fused list with the items' payloads (and vectors where MMR or
    the ranker read them) in one round trip; items deleted since retrieval drop out."""
    top = fused[:shape.top]
    points = catalogue.get_many([c.id for c in top], with_vectors=with_vectors)
    return [c for c in top if c.id in points], points


@dataclass
class RankedList:
    """The list as it moves through the last steps: ids best first, each item's score and trace."""

    ids: list[str]
    scores: dict[str, float]
    traces: dict[str, ItemTrace]

    @classmethod
    def from_fused(cls, top: list[FusedCandidate]) -> RankedList:
        return cls([c.id for c in top], {c.id: c.score for c in top},
                   {c.id: ItemTrace(c.sources, c.no_opinion) for c in top})


def rerank_top(catalogue: Catalogue, index: CoOccurrenceIndex, ctx: RecommendContext, top: list[FusedCandidate],
               points: dict[str, StoredPoint], reranker: LoadedReranker) -> tuple[Reranking, dict[str, int]]:
    """Step "rerank": the served ranker's order over the hydrated top, and each item's place in
    retrieval's order (1-based)."""
    inputs = rank_inputs(catalogue, index, ctx.history, top, points, query=ctx.query_text,
                         preferences=ctx.preference_text, texts=reranker.cross_encoder is not None,
                         sequence=reranker.sequence)
    return rerank(reranker, inputs), {item_id: n for n, item_id in enumerate(inputs.ids, start=1)}


def ranking_notes(req: RecommendRequest, used: LoadedReranker | None, served: LoadedReranker | None,
                  candidates: int, shape: ListShape) -> list[str]:
    """What the response says about reranking: the model that reordered the list, or why none did."""
    if used is not None:
        return [f"reranked the top {candidates} with {used.description} {used.version}"
                + (f"; diversity {shape.diversity:g}, the default for reranked lists (ask for more with "
                   f"'diversity')" if req.diversity is None else "")]
    if not req.rerank:
        return ["reranking turned off by the request"]
    if served is None:
        return ["no reranker trained yet: ranked by fused retrieval scores"]
    return []


def apply_reranking(ranked: RankedList, reranking: Reranking, retrieval_rank: dict[str, int]) -> None:
    """Step "rerank", second half: the ranker's order, scores and trace onto the list."""
    for r in reranking.order:
        ranked.traces[r.id].rerank = RerankTrace(rank=r.place, score=round(r.score, 6),
                                                 retrieval_rank=retrieval_rank[r.id], kept_place=r.kept)
        ranked.scores[r.id] = r.score
    ranked.ids = [r.id for r in reranking.order]


def apply_diversity(ranked: RankedList, top: list[FusedCandidate], points: dict[str, StoredPoint],
                    shape: ListShape, req: RecommendRequest, reranked: bool) -> int:
    """Step "diversify": MMR and the per-category cap over the list; returns how many items moved.

    MMR trades relevance against similarity on the scale it was tuned on: fused scores. A reranked
    list enters it with the pool's fused scores, best first (retrieval's relevance profile in the
    ranker's order): read as relevance, the ranker's own scores made MMR reshuffle reranked lists
    and move the cold items the ranker keeps in place (benchmarks/diversity.py).
    """
    ids = ranked.ids
    vectors = {i: points[i].vector for i in ids if points[i].vector is not None}
    leaf = {i: (points[i].payload.get("categories") or [None])[-1] for i in ids}
    relevance = (sorted((c.score for c in top), reverse=True)[:len(ids)]
                 if reranked else [ranked.scores[i] for i in ids])
    picked = diversify(ids, relevance, vectors, shape.diversity, req.k, leaf, req.max_per_category)
    for p in picked:
        ranked.traces[p.id].diversity = DiversityTrace(relevance_rank=p.relevance_rank, rank=p.rank,
                                                       moved=p.relevance_rank - p.rank,
                                                       max_similarity_to_above=round(p.max_similarity, 4))
    ranked.ids = [p.id for p in picked]
    return sum(1 for p in picked if p.relevance_rank != p.rank)


def explain_drivers(ranked: RankedList, reranker: LoadedReranker, reranking: Reranking,
                    retrieval_rank: dict[str, int]) -> None:
    """Step "explain the ranker's drivers": what drove the ranker's score, for the items served and
    moved by it (explanations name them)."""
    moved = [i for i in ranked.ids if i in retrieval_rank and not ranked.traces[i].rerank.kept_place]
    found = rank_drivers(reranker.ranker, reranking.features, [retrieval_rank[i] - 1 for i in moved])
    for item_id, drivers in zip(moved, found):
        ranked.traces[item_id].rerank.drivers = [RankDriver(**d) for d in drivers]


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
        categories = CategoryItems(catalogue, index)  # shared: one read of a category per catalogue change
        self.sources = {
            "dense_query": DenseSource(catalogue, "dense_query", "query", w["dense_query"]),
            "dense_profile": DenseSource(catalogue, "dense_profile", "profile", w["dense_profile"],
                                         w["dense_profile_without_query"]),
            "lexical": LexicalSource(catalogue, w["lexical"], w["lexical_history"]),
            "collaborative": CollaborativeSource(
                catalogue, index, w["collaborative"], decay=config.collaborative_decay,
                proximity=config.collaborative_proximity, backward=config.collaborative_backward),
            "sequence": SequenceSource(catalogue),
            "interest": InterestSource(catalogue, index, w["interest"], lift=config.interest_lift,
                                       categories=categories),
        }
        self.popular = PopularSource(catalogue, index, w["popular"])
        # Each source result's weight in the pool a ranker reorders. A ranker reorders history
        # requests only, so BM25's is its history weight and the profile's its weight without a query.
        pool = None if config.ranker_pool_weights is None else source_weights(config.ranker_pool_weights)
        self.pool_weights = None if pool is None else {**pool, "lexical": pool["lexical_history"],
                                                       "dense_profile": pool["dense_profile_without_query"]}
        self.off = sources_off(w, pool or w)
        self.popularity_prior = PopularSource(catalogue, index, config.preference_popularity_prior,
                                              fallback=False, name="popularity_prior", categories=categories)
        # Swapped as a whole by ``Engine.reload_reranker``: a request sees the old model or the new.
        self.reranker: LoadedReranker | None = None
        self.queries = QueryUnderstanding(catalogue, index, profiles.texts.get)

    @property
    def query_suggest(self) -> Suggest | None:
        """Optional language-model suggestions for query constraints (see ``QueryParser``)."""
        return self.queries.suggest

    @query_suggest.setter
    def query_suggest(self, suggest: Suggest | None) -> None:
        self.queries.suggest = suggest

    def understand(self, req: RecommendRequest) -> tuple[RecommendRequest, ParsedQuery | None]:
        """Step "understand the query": the request with its query's constraints and anchor applied."""
        if not (req.query and req.query.strip() and req.understand_query):
            return req, None
        parsed = self.queries.parse(req.query.strip(), user_id=req.user_id)
        return apply_query(req, parsed), parsed

    def _weight(self, name: str, retyped: dict[str, float]) -> float:
        return retyped.get(name, 0.0 if name in self.off else 1.0)

    def asks(self, name: str, request_type: str) -> bool:
        """Whether the full pipeline asks source ``name`` for a request of ``request_type``."""
        return (name in self.config.sources and name in self.sources
                and self._weight(name, self.config.request_weights.get(request_type, {})) > 0)

    def gather(self, ctx: RecommendContext, options: ReplayOptions, notes: list[str]) -> list[SourceResult]:
        """Step "gather candidates": each wanted source's ranked list; for a profile of stated
        preferences alone where the interest source says nothing, popularity as a prior;
        popularity as the fallback when nothing else answers."""
        wanted = options.sources or self.config.sources
        # The full pipeline fuses at the weights chosen for this type of request; a request that
        # names its sources (a baseline, a single-source stage) keeps them as they are.
        retyped = {} if options.sources is not None else self.config.request_weights.get(ctx.request_type, {})
        if ctx.request_type == "preferences" and ctx.preference_text:
            ctx.stated_categories = self.queries.stated_categories(ctx.preference_text)
        results = []
        for name in wanted:
            source = self.sources.get(name)
            if source is None or self._weight(name, retyped) <= 0:
                continue
            result = source.candidates(ctx)
            # Kept at weight 0 too (a situation's weight, such as BM25's over history titles): the
            # fusion drops it, and the pool a ranker reorders may weigh it.
            if result is not None and result.ranked:
                results.append(reweigh(result, retyped))
        answered = {r.name for r in results if r.weight > 0}
        if (ctx.request_type == "preferences" and options.sources is None and answered and "interest" not in answered
                and retyped.get("popularity_prior", self.config.preference_popularity_prior) > 0):
            within = ctx.stated_categories if self.config.preference_prior_within_categories else ()
            prior = self.popularity_prior.within(ctx, within) if within else self.popularity_prior.candidates(ctx)
            if prior is not None:
                results.append(reweigh(prior, retyped))
        if not answered or "popular" in wanted:
            results.append(self.popular.candidates(ctx))
            if not answered:
                notes.append("nothing known about this request: showing popular items")
        return results

    def fuse(self, results: list[SourceResult], ranker_pool: bool) -> list[FusedCandidate]:
        """Step "fuse": one list from the sources' lists, as the pool a ranker reorders where one will."""
        if self.pool_weights is not None and ranker_pool:
            results = [replace(r, weight=self.pool_weights.get(r.name, r.weight)) for r in results]
        return fuse(results, rrf_k=self.config.rrf_k, no_opinion_credit=self.config.no_opinion_credit)

    def recommend(self, req: RecommendRequest, options: ReplayOptions | None = None) -> RecommendResult:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        clock = [started]

        def done(step: str) -> None:  # the time since the previous step ended
            now = time.perf_counter()
            timings[step] = timings.get(step, 0.0) + now - clock[0]
            clock[0] = now

        options = options or ReplayOptions()
        validate(req, options, self.catalogue, {*self.sources, "popular"})
        done("validate")
        req, parsed = self.understand(req)
        done("understand")
        ctx, profile = build_context(req, options, self.profiles, self.catalogue, self.config)
        done("context")
        notes: list[str] = []
        sequence = self.sources["sequence"].loaded  # read once: a reload swaps it as a whole
        results = self.gather(ctx, options, notes)
        done("gather")
        reranker = choose_ranker(self.reranker if req.rerank else None, ctx, notes)
        fused = self.fuse(results, ranker_pool=reranker is not None or options.ranker_pool)
        done("fuse")
        shape = ListShape.of(req, self.config, reranked=reranker is not None)
        top, points = hydrate(self.catalogue, fused, shape,
                              with_vectors=(shape.diverse and shape.diversity > 0) or reranker is not None)
        done("hydrate")
        ranked = RankedList.from_fused(top)
        reranked = reranker is not None and bool(top)
        if reranked:
            reranking, retrieval_rank = rerank_top(self.catalogue, self.profiles.index, ctx, top, points, reranker)
            apply_reranking(ranked, reranking, retrieval_rank)
            done("rerank")
        notes += ranking_notes(req, reranker if reranked else None, self.reranker, len(top), shape)
        if shape.diverse and ranked.ids:
            moved = apply_diversity(ranked, top, points, shape, req, reranked)
            notes.append(f"diversity {shape.diversity:g}" + (f", at most {req.max_per_category} per category"
                                                              if req.max_per_category else "") + f": {moved} items moved")
            done("diversify")
        ranked.ids = ranked.ids[:req.k]
        if reranked:
            explain_drivers(ranked, reranker, reranking, retrieval_rank)
            done("explain_drivers")
        items = [RecommendedItem(i, ranked.scores[i], points[i].payload, ranked.traces[i]) for i in ranked.ids]
        return RecommendResult(
            items=items,
            sources=[r.name for r in results],
            profile=profile,
            notes=notes,
            took_ms=(time.perf_counter() - started) * 1000,
            reranker=reranker.version if reranker is not None and items else None,
            interpreted=parsed.interpreted() if parsed is not None else None,
            timings=timings,
            sequence=sequence.version if sequence is not None and any(r.name == "sequence" for r in results)
            else None,
        )
