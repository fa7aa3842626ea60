"""Offline evaluation: leave-one-out with full ranking, replayed through the real pipeline.

The protocol of the text-based sequential-recommendation literature (UniSRec, VQ-Rec, Recformer):
each user's last item is the test target and everything before it the history (validation: the
second-to-last item, with everything before that). The histories are replayed through the same
code the service runs (items through ``Catalogue``, events through ``Profiles.record``), and every
method ranks the whole catalogue minus the user's history.

Slices:
- ``all``: every evaluated user.
- ``cold_items``: a seeded fraction of items is removed from every training interaction (only their
  text is known, in a second replay); users whose target is one of them.
- ``cold_users``: the system has never seen the user; the request carries only the most recent
  history item (an anonymous session).
- ``cold_users_prefs``: no history at all; the user states preferences made from nothing but the
  leaf categories of their own history items ("Interested in: Ballpoint Pens, Staplers").
- ``long_tail``: targets outside the 20% most popular items (by training interactions).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from encoders import BiEncoder
from retrieval.engine import Engine, EngineConfig
from retrieval.evaluation import metrics
from retrieval.evaluation.datasets import Dataset
from retrieval.pipeline.config import RecommendConfig
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.pipeline.sources import LoadedSequence, rank_hits
from retrieval.ranking.rerank import LoadedReranker
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.state.profiles import ProfileConfig
from retrieval.storage.vector_store import StoredPoint

BASELINES = ("popularity", "itemknn", "bm25", "zero_shot")
STAGES = ("dense_profile", "collaborative_seq", "hybrid_plain_rrf", "hybrid_retrieval")
RERANKED = "hybrid_reranked"  # hybrid_retrieval with a cross-encoder over its top (needs a reranker)
SEQUENCE = "sequence_encoder"  # the sequence encoder's source alone (needs a sequence model)
INTEREST = "stated_interest"  # the interest source alone (benchmarks/fusion_sources.py)
SLICES = ("all", "cold_items", "cold_users", "cold_users_prefs", "long_tail")
CUTOFF = 50  # ranked lists are this long; metrics at 10 and 50


@dataclass
class EvalConfig:
    seed: int = 42
    split: str = "test"  # or "valid": the second-to-last item is the target
    max_users: int | None = None
    cold_item_fraction: float = 0.1
    long_tail_head: float = 0.2
    methods: tuple[str, ...] = BASELINES + STAGES
    event_type: str = "purchase"  # reviews are purchases
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    profiles: ProfileConfig = field(default_factory=ProfileConfig)


@dataclass
class Case:
    user_id: str
    history: list[str]
    target: str


def leave_one_out(sequences: dict[str, list[str]], split: str) -> dict[str, Case]:
    """Test: last item vs everything before. Valid: second-to-last vs everything before it.
    Users whose history would be empty are skipped."""
    drop = {"test": 1, "valid": 2}[split]
    cases = {}
    for user, seq in sequences.items():
        if len(seq) > drop:
            cases[user] = Case(user, seq[: len(seq) - drop], seq[len(seq) - drop])
    return cases


def cold_items(items: list[str], fraction: float, seed: int) -> set[str]:
    rng = random.Random(seed)
    return set(rng.sample(sorted(items), round(len(items) * fraction)))


def cold_slice_items(dataset: Dataset, config: EvalConfig) -> set[str]:
    """The items the cold-items slice treats as new under ``config`` (anything trained for that
    slice must leave them out too: ``stages.training_part``)."""
    return cold_items([row["id"] for row in dataset.items], config.cold_item_fraction, config.seed)


def preference_text(history: list[str], categories: dict[str, list[str]], top: int = 3) -> str | None:
    """A stated preference built only from the leaf categories of the user's history."""
    counts = Counter(categories[i][-1] for i in history if categories.get(i))
    if not counts:
        return None
    return "Interested in: " + ", ".join(c for c, _ in counts.most_common(top))


class ItemKNN:
    """The classic item-kNN baseline's scores, exact and vectorised, over a snapshot of ``index``.

    ``neighbours`` with ``proximity=0, backward=1`` (plain co-occurrence) and no ``leave_out``
    equals ``CoOccurrenceIndex.exact_neighbours`` on the newest
    ``index.bounds.history_length(decay)`` history items (31 at decay 0.8, the service's own
    cap: older items weigh under 1e-3), every history item still excluded: co-occurrence over
    every taker's whole sequence, not the service's bounded lists (500 most recent takers scaled
    up, 50 positions either side, 1,000 neighbours per item), which differ from it on a dense log.
    One item's co-occurrence row (a ``bincount`` over its takers' sequences) is computed once
    and kept, so a request costs one ``bincount`` over at most 31 rows instead of a walk over
    every co-occurring sequence. Anything else (the sequential variant, ``leave_out``, ``knows``,
    ``popular``, ``history``) is the index's own.

    The snapshot is taken at construction: events added to ``index`` later are not seen (the
    evaluation adds none after its replay).

    Example::

        knn = ItemKNN(engine.index)
        knn.neighbours(["a", "b"], decay=0.8, limit=200)  # == index.exact_neighbours(["a", "b"], 0.8, 200)
    """

    def __init__(self, index: CoOccurrenceIndex):
        self.index = index
        sequences = [index.history(u) for u in index.user_ids()]
        self._names = sorted({i for seq in sequences for i in seq})
        self._codes = {name: code for code, name in enumerate(self._names)}
        self._sequences = [np.fromiter((self._codes[i] for i in seq), dtype=np.int64, count=len(seq))
                           for seq in sequences]
        takers: dict[int, list[int]] = defaultdict(list)
        for user, seq in enumerate(self._sequences):
            for code in seq.tolist():
                takers[code].append(user)
        self._takers = dict(takers)
        size = len(self._names)
        self._counts = (np.bincount(np.concatenate(self._sequences), minlength=size).astype(np.float64)
                        if self._sequences else np.zeros(0))
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    def _row(self, code: int) -> tuple[np.ndarray, np.ndarray]:
        """How many users took both ``code`` and each other item (the item itself included)."""
        row = self._rows.get(code)
        if row is None:
            together = np.bincount(np.concatenate([self._sequences[u] for u in self._takers[code]]),
                                   minlength=len(self._names))
            kept = np.flatnonzero(together)
            row = self._rows[code] = (kept, together[kept].astype(np.float64))
        return row

    def neighbours(self, history: list[str], decay: float = 0.8, limit: int = 200, proximity: float = 0.0,
                   backward: float = 1.0, leave_out: str | None = None) -> dict[str, float]:
        if proximity != 0.0 or backward != 1.0 or leave_out is not None:
            return self.index.neighbours(history, decay, limit, proximity, backward, leave_out)
        newest = list(reversed(history))[:self.index.bounds.history_length(decay)]
        codes, weights = [], []
        for age, item_id in enumerate(newest):
            code = self._codes.get(item_id)
            if code is None:
                continue
            others, together = self._row(code)
            codes.append(others)
            weights.append(together * (decay**age / math.sqrt(self._counts[code])))
        if not codes:
            return {}
        scores = np.bincount(np.concatenate(codes), np.concatenate(weights), minlength=len(self._names))
        scores /= np.sqrt(np.maximum(self._counts, 1.0))
        scores[[self._codes[i] for i in history if i in self._codes]] = 0.0
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > limit > 0:
            cutoff = np.partition(scores[candidates], len(candidates) - limit)[len(candidates) - limit]
            candidates = candidates[scores[candidates] >= cutoff]  # ties at the cut-off are ordered by id
        ranked = sorted(((self._names[c], float(scores[c])) for c in candidates), key=lambda kv: (-kv[1], kv[0]))
        return dict(ranked[:limit])


class Replay:
    """An engine in a scratch directory holding the catalogue and the training histories."""

    def __init__(self, dataset: Dataset, encoder: BiEncoder, histories: dict[str, list[str]], points: list[StoredPoint],
                 config: EvalConfig, label: str, reranker: LoadedReranker | None = None,
                 sequence: LoadedSequence | None = None):
        # A catalogue and a log each: deleted at ``close``, or when the replay is dropped unclosed.
        self._folder = tempfile.TemporaryDirectory(prefix=f"hybridrec-eval-{label}-")
        self.dir = Path(self._folder.name)
        self.engine = Engine.open(EngineConfig(data_dir=self.dir, recommend=config.recommend,
                                               profiles=config.profiles), encoder=encoder)
        self.engine.recommender.reranker = reranker
        self.engine.recommender.sources["sequence"].loaded = sequence
        for start in range(0, len(points), 1000):
            self.engine.catalogue.write(points[start:start + 1000])
        self.engine.catalogue.optimize()
        users = sorted(histories)
        now = time.time()
        batch: list[dict[str, Any]] = []
        with tqdm(total=len(users), unit="user", desc=f"replay {label}", mininterval=1) as bar:
            for n, user in enumerate(users, start=1):
                hist = histories[user]
                # One second apart, oldest first: the order is what the dataset knows.
                batch += [{"user_id": user, "type": config.event_type, "item_id": item,
                           "timestamp": now - (len(hist) - i)} for i, item in enumerate(hist)]
                if len(batch) >= 2000 or n == len(users):
                    report = self.engine.profiles.record(batch, now=now)
                    assert not report.rejected, report.rejected[:3]
                    bar.update(len({e["user_id"] for e in batch}))
                    batch = []
        self.plain = Recommender(self.engine.catalogue, self.engine.profiles, self.engine.index,
                                 RecommendConfig(**{**asdict(config.recommend), "no_opinion_credit": 0.0}))
        # The classic item-kNN baseline: plain co-occurrence, not our sequential variant, scored
        # exactly over the whole log (``ItemKNN``) rather than from the service's bounded lists.
        self.classic = Recommender(self.engine.catalogue, self.engine.profiles, ItemKNN(self.engine.index),
                                   RecommendConfig(**{**asdict(config.recommend), "collaborative_proximity": 0.0,
                                                      "collaborative_backward": 1.0, "collaborative_decay": 0.8}))

    def close(self) -> None:
        """Close the engine and delete its scratch directory (a whole catalogue and log each)."""
        try:
            self.engine.close()
        finally:
            self._folder.cleanup()


# A method answers one request: (replay, user id or None, history, preference text) -> ranked ids.
Method = Callable[[Replay, str | None, list[str], str | None], list[str]]


def _pipeline(sources: tuple[str, ...] | None, variant: str = "engine", rerank: bool = False,
              diversity: float | None = None) -> Method:
    """``diversity`` None: the service's default MMR; baselines pass 0 (pure relevance, as classically defined)."""
    def run(replay: Replay, user_id, history, prefs) -> list[str]:
        recommender = {"engine": replay.engine.recommender, "plain": replay.plain, "classic": replay.classic}[variant]
        if user_id is not None:
            req = RecommendRequest(user_id=user_id, k=CUTOFF, rerank=rerank, diversity=diversity)
        else:
            req = RecommendRequest(history=history, k=CUTOFF, rerank=rerank, diversity=diversity)
        return [i.id for i in recommender.recommend(req, ReplayOptions(sources=sources)).items]
    return run


def _zero_shot(replay: Replay, user_id, history, prefs) -> list[str]:
    """Baseline: the plain mean of the history's item vectors (or the encoded preference text)."""
    catalogue = replay.engine.catalogue
    if history:
        vectors = list(catalogue.vectors(history).values())
        query = np.mean(vectors, axis=0) if vectors else None
    else:
        query = replay.engine.profiles.texts.get(prefs) if prefs else None
    if query is None:
        return []
    hits = catalogue.store.search_dense(catalogue.collection, query, CUTOFF, exclude=set(history))
    return [item_id for item_id, _ in rank_hits(hits)]


METHODS: dict[str, Method] = {
    "popularity": _pipeline(("popular",), diversity=0.0),
    "itemknn": _pipeline(("collaborative",), variant="classic", diversity=0.0),
    "bm25": _pipeline(("lexical",), diversity=0.0),
    "zero_shot": _zero_shot,
    "dense_profile": _pipeline(("dense_profile",)),
    "collaborative_seq": _pipeline(("collaborative",)),
    "hybrid_plain_rrf": _pipeline(None, variant="plain"),
    "hybrid_retrieval": _pipeline(None),
    RERANKED: _pipeline(None, rerank=True),
    SEQUENCE: _pipeline(("sequence",)),
    # What the people who took the categories of stated preferences took (preference-only users;
    # anyone else gets popularity, as a request with nothing to go on).
    INTEREST: _pipeline(("interest",), diversity=0.0),
}


def summarise(ranks: list[int | None], lists: list[list[str]], catalogue: list[str],
              vectors: dict[str, np.ndarray]) -> dict[str, float]:
    n = len(ranks)
    if n == 0:
        return {"users": 0}
    ild = [metrics.intra_list_diversity(np.stack([vectors[i] for i in lst[:10] if i in vectors]))
           for lst in lists if len(lst) >= 2]
    out = {"users": n}
    for k in (10, 50):
        out[f"recall@{k}"] = sum(metrics.recall_at(r, k) for r in ranks) / n
        out[f"ndcg@{k}"] = sum(metrics.ndcg_at(r, k) for r in ranks) / n
    out["mrr"] = sum(metrics.reciprocal_rank(r, CUTOFF) for r in ranks) / n
    out["coverage@10"] = metrics.coverage(lists, len(catalogue), 10)
    out["ild@10"] = float(np.mean(ild)) if ild else 0.0
    out["gini@10"] = metrics.gini(lists, catalogue, 10)
    out["recall_curve"] = [sum(metrics.recall_at(r, k) for r in ranks) / n for k in range(1, CUTOFF + 1)]
    return out


def encode_catalogue(dataset: Dataset, encoder: BiEncoder) -> list[StoredPoint]:
    """The catalogue encoded through the ingest path's own validate + encode."""
    with tempfile.TemporaryDirectory(prefix="hybridrec-eval-encode-") as folder:
        scratch = Engine.open(EngineConfig(data_dir=Path(folder)), encoder=encoder)
        try:
            valid_items, rejected = scratch.catalogue.validate(dataset.items)
            if rejected:
                raise ValueError(f"{len(rejected)} dataset items are invalid, first: {rejected[0].error}")
            points = []
            for start in tqdm(range(0, len(valid_items), 256), desc="encode catalogue", unit="batch", mininterval=1):
                points += scratch.catalogue.encode(valid_items[start:start + 256])
        finally:
            scratch.close()
    return points


def evaluated_users(dataset: Dataset, config: EvalConfig) -> tuple[dict[str, Case], list[str]]:
    """Every user's leave-one-out case for ``config.split`` and the users evaluated: a seeded sample
    of ``config.max_users``, sorted (every method, and the peers, rank for these)."""
    cases = leave_one_out(dataset.sequences, config.split)
    users = sorted(cases)
    if config.max_users and config.max_users < len(users):
        users = sorted(random.Random(config.seed).sample(users, config.max_users))
    return cases, users


def evaluate(dataset: Dataset, encoder: BiEncoder, config: EvalConfig | None = None,
             points: list[StoredPoint] | None = None, slices: tuple[str, ...] = SLICES,
             reranker: LoadedReranker | None = None, sequence: LoadedSequence | None = None) -> dict[str, Any]:
    """Run every method on every slice; returns ``{"slices": {slice: {method: metrics}}, "config",
    "dataset", "seconds", "timings"}``. ``points`` (from ``encode_catalogue``) skips re-encoding; ``reranker``
    is what the ``hybrid_reranked`` method reorders the top of the fused list with; ``sequence`` a
    sequence encoder every pipeline method serves (its source alone: ``sequence_encoder``)."""
    started = time.perf_counter()
    config = config or EvalConfig()
    if RERANKED in config.methods and reranker is None:
        raise ValueError(f"method {RERANKED!r} needs a reranker")
    if SEQUENCE in config.methods and sequence is None:
        raise ValueError(f"method {SEQUENCE!r} needs a sequence encoder")
    cases, users = evaluated_users(dataset, config)
    catalogue_ids = [row["id"] for row in dataset.items]
    categories = {row["id"]: row.get("categories") or [] for row in dataset.items}
    cold = cold_slice_items(dataset, config)

    points = points if points is not None else encode_catalogue(dataset, encoder)
    vectors = {p.id: p.vector for p in points}

    histories = {u: c.history for u, c in cases.items()}
    timings: dict[str, Any] = {"replay": {}, "methods": {}}  # wall seconds
    clock = time.perf_counter()
    warm = Replay(dataset, encoder, histories, points, config, "warm", reranker, sequence)
    timings["replay"]["warm"] = time.perf_counter() - clock
    popularity = Counter(i for h in histories.values() for i in h)
    head = {i for i, _ in popularity.most_common(round(len(catalogue_ids) * config.long_tail_head))}
    cold_histories = {u: [i for i in h if i not in cold] for u, h in histories.items()}
    cold_replay = None
    if "cold_items" in slices:
        clock = time.perf_counter()
        cold_replay = Replay(dataset, encoder, {u: h for u, h in cold_histories.items() if h}, points, config,
                             "cold-items", reranker, sequence)
        timings["replay"]["cold_items"] = time.perf_counter() - clock

    # (slice, replay, users, request builder)
    plans = [
        ("all", warm, users, lambda u: (u, cases[u].history, None)),
        ("cold_items", cold_replay, [u for u in users if cases[u].target in cold and cold_histories[u]],
         lambda u: (u, cold_histories[u], None)),
        ("cold_users", warm, users, lambda u: (None, cases[u].history[-1:], None)),
        ("cold_users_prefs", warm, users, lambda u: (f"cold::{u}", [], stated[u])),
    ]
    # Stated preferences for the never-seen twins of the cold_users_prefs slice.
    stated = {u: preference_text(cases[u].history, categories) for u in users}
    for u, text in stated.items():
        if text:
            warm.engine.profiles.log.set_preferences(f"cold::{u}", text, {}, time.time())
    warm.engine.profiles.refresh([f"cold::{u}" for u in users])

    results: dict[str, dict[str, Any]] = {s: {} for s in SLICES if s in slices}
    # Each user's target rank per slice and method, in the same user order for every method, so
    # two methods (or two runs with the same config) can be compared user by user.
    all_ranks: dict[str, dict[str, list[int | None]]] = {s: {} for s in results}
    ranks_all: dict[str, list[int | None]] = {}
    lists_all: dict[str, list[list[str]]] = {}
    plans = [plan for plan in plans if plan[0] in slices]
    for slice_name, replay, slice_users, build in plans:
        for method in config.methods:
            run = METHODS[method]
            ranks, lists = [], []
            clock = time.perf_counter()
            for u in tqdm(slice_users, desc=f"{slice_name}: {method}", unit="user", mininterval=2, leave=False):
                user_id, history, prefs = build(u)
                ranked = run(replay, user_id, history, prefs)
                ranks.append(metrics.target_rank(ranked, cases[u].target))
                lists.append(ranked)
            timings["methods"].setdefault(slice_name, {})[method] = time.perf_counter() - clock
            results[slice_name][method] = summarise(ranks, lists, catalogue_ids, vectors)
            all_ranks[slice_name][method] = ranks
            if slice_name == "all":
                ranks_all[method], lists_all[method] = ranks, lists
    tail_idx = [n for n, u in enumerate(users) if cases[u].target not in head]
    for method in config.methods if "long_tail" in slices and "all" in slices else ():
        all_ranks["long_tail"][method] = tail_ranks = [ranks_all[method][n] for n in tail_idx]
        results["long_tail"][method] = summarise(tail_ranks, [lists_all[method][n] for n in tail_idx],
                                                 catalogue_ids, vectors)
    warm.close()
    if cold_replay is not None:
        cold_replay.close()
    return {
        "dataset": {"name": dataset.name, **dataset.stats()},
        "config": {**asdict(config), "cold_items": len(cold), "long_tail_head_items": len(head),
                   "evaluated_users": len(users), "encoder": encoder.name, "device": encoder.device,
                   "cutoff": CUTOFF},
        "slices": results,
        "ranks": all_ranks,  # per user; not written to results.json (see ``paired_change``)
        # Wall seconds: each replay, and each method's requests per slice (benchmarks/eval_dense.py).
        "timings": timings,
        "seconds": time.perf_counter() - started,
    }


def paired_change(new: list[int | None], old: list[int | None], k: int = 10) -> dict[str, float]:
    """NDCG@k of ``new`` minus ``old`` over the same users (two methods' ``ranks`` from evaluations
    with the same config), with the standard error of that mean difference.

    >>> paired_change([1, None], [None, None])
    {'ndcg@10': 0.5, 'standard_error': 0.5}
    """
    if len(new) != len(old):
        raise ValueError(f"not the same users: {len(new)} ranks against {len(old)}")
    mean, se = metrics.paired_difference([metrics.ndcg_at(r, k) for r in new], [metrics.ndcg_at(r, k) for r in old])
    return {f"ndcg@{k}": mean, "standard_error": se}
