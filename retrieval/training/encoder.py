"""Fine-tune the bi-encoder on the event log: (an item -> the item taken next).

Contrastive with in-batch negatives (``encoders.training.train_contrastive``). This puts the
collaborative signal ("people who had this went on to that") into the text space, so it still
works for items nobody has touched: they are encoded from their text by the same model. Both sides
of a pair are item texts because that is how the dense profile serves: a decayed mean of the
history's item vectors, in which the newest item weighs most.

Validation judges each user's newest item, which the model never sees, as the offline evaluation
replays the log (the collaborative signal as it stood before every user's newest item), and scores
the fused retrieval that serves with the old and the new model's item vectors (the new ones in
scratch collections). The new model must also not be clearly worse on long-tail targets, nor on
any slice the evaluation reports (cold items, cold users, preference-only users, the long tail:
``protocol.judge_every_slice``), at its weights against what serves; a seeded share of items
(``protocol.COLD_ITEM_SHARE``) is left out of its training pairs so that the cold-items slice
judges items it never learned from.
For an item someone has taken, the new encoder relearns what the collaborative source already
reads exactly; what it adds is what BM25 gave cold items, so the fusion that serves it may lean
less on BM25 and more on the profile vector: the trainer tries each pair of
``lexical_weights`` x ``dense_profile_weights`` with both encoders and keeps the new one, with its
weights, only if it is clearly better than what serves and than the old encoder at the same
weights (why: docs/research.md, "The encoder's fusion weights"; measured by
benchmarks/encoder_freshness.py --weights and ``make eval-stages``). The weights tune the
order served as is; a ranker's pool keeps the configured ones (``RecommendConfig.with_weights``).
Dense retrieval alone is recorded beside it. Accepted models are served after ``hybridrec
reindex``, which gives the new layout the weights chosen here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders import BiEncoder, item_text
from encoders.bi_encoder import centred
from encoders.profile import position_weights
from encoders.training import train_contrastive
from retrieval.engine import Engine
from retrieval.evaluation import metrics
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.registry import ModelVersions
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.layout import SCRATCH_PREFIX
from retrieval.storage.vector_store import StoredPoint, scroll_all
from retrieval.training.protocol import (
    COLD_ITEM_SHARE,
    MIN_RELATIVE_GAIN,
    SLICE_WORSE_MARGIN,
    SliceCase,
    clearly_better,
    held_out_items,
    index_of,
    item_categories,
    judge_every_slice,
    judged_users,
    log_sequences,
    next_item_cases,
    score_slices,
    slice_cases,
    slice_request,
    with_stated_preferences,
    withheld_if_forgotten,
    without_items,
)
from retrieval.training.settings import EncoderTrainingSettings

# Newest history items in a profile the trainer builds for validation; at
# the served position decay (0.5) an older one weighs under a millionth of the newest.
PROFILE_ITEMS = 20


def fusion_weights(pair: tuple[float, float]) -> dict[str, float]:
    """The fusion weights the trainer tries and records: (BM25 over history titles, the profile
    in a request without a query)."""
    return {"lexical_history": pair[0], "dense_profile_without_query": pair[1]}


def _weights_text(pair: tuple[float, float]) -> str:
    return f"history BM25 weight {pair[0]:g}, profile weight {pair[1]:g}"


def replayed_before_newest(sequences: dict[str, list[str]]) -> CoOccurrenceIndex:
    """The co-occurrence index as the log stood before each user's newest item: what the
    collaborative signal knew when that item was the next one (the offline evaluation's replay).

    >>> replayed_before_newest({"u": ["a", "b"], "v": ["a", "c", "b"]}).history("v")
    ['a', 'c']
    """
    index = CoOccurrenceIndex()
    for user, sequence in sequences.items():
        for item in sequence[:-1]:
            index.add(user, item)
    return index


def dense_ndcg(vectors: dict[str, np.ndarray], cases: list[tuple[list[str], str]], decay: float) -> list[float]:
    """NDCG@10 of dense retrieval alone for each (history, target) case: the profile the service
    builds (decayed sum of the newest ``PROFILE_ITEMS`` item vectors) against every item but the history."""
    ids = sorted(vectors)
    matrix = np.stack([vectors[i] for i in ids])
    position = {i: n for n, i in enumerate(ids)}
    scores = []
    for history, target in cases:
        recent = [h for h in history[-PROFILE_ITEMS:] if h in position]
        if not recent or target not in position:
            scores.append(0.0)
            continue
        weights = np.array(position_weights(len(recent), decay))
        query = (weights[:, None] * matrix[[position[h] for h in recent]]).sum(axis=0)
        sims = matrix @ (query / max(np.linalg.norm(query), 1e-9))
        sims[[position[h] for h in recent]] = -np.inf
        top = np.argsort(-sims, kind="stable")[:10]
        scores.append(metrics.ndcg_at(metrics.target_rank([ids[i] for i in top], target), 10))
    return scores


@contextmanager
def _scratch(engine: Engine, encoder: BiEncoder | None = None,
             vectors: dict[str, np.ndarray] | None = None) -> Iterator[Callable[..., Recommender]]:
    """A function ``(weights, index) -> Recommender`` over the served catalogue (no ``vectors``) or,
    with them (and the ``encoder`` that made them, for queries), over the catalogue written with
    those vectors into scratch collections beside the served ones, dropped on exit; the served
    ones are never touched. ``weights``: fusion weights over the served ones (None: as served);
    ``index``: the co-occurrence index the collaborative signal reads (None: the log's own)."""
    layout, scratch, encoder = engine.layout, None, encoder or engine.encoder
    if vectors is not None:
        tag = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}_{random.randrange(1 << 30)}"
        layout = scratch = replace(layout, items=f"{SCRATCH_PREFIX}items_{tag}", users=f"{SCRATCH_PREFIX}users_{tag}")
    try:
        if scratch is not None:
            catalogue, _, _ = engine.wire(scratch, encoder, scratch=True)
            # Payloads and BM25 vectors as stored; only the dense vectors change.
            for points in scroll_all(engine.store, engine.catalogue.collection, with_vectors=True):
                catalogue.write([StoredPoint(p.id, p.payload, vectors[p.id], p.sparse) for p in points
                                 if p.id in vectors])
            catalogue.optimize()

        def wired(weights: dict[str, float] | None = None, index: CoOccurrenceIndex | None = None) -> Recommender:
            return engine.wire(replace(layout, weights={**(layout.weights or {}), **(weights or {})}),
                               encoder, index)[2]

        yield wired
    finally:
        if scratch is not None:
            for name in (scratch.items, scratch.users):
                engine.store.drop_collection(name)


def _ndcg(recommender: Recommender, cases: list[tuple[str, list[str], str]], own_log: bool) -> list[float]:
    """NDCG@10 of ``recommender``'s list (the served diversity, no reranker) for each
    ``(user, history, target)``; ``own_log``: the collaborative signal without the user's own events."""
    scores = []
    for user, history, target in cases:
        req = RecommendRequest(history=history[-PROFILE_ITEMS:], k=10, rerank=False)
        ids = [i.id for i in recommender.recommend(req, ReplayOptions(leave_out_user=user if own_log else None)).items]
        scores.append(metrics.ndcg_at(metrics.target_rank(ids, target), 10))
    return scores


def _fused_ndcg(engine: Engine, cases: list[tuple[str, list[str], str]], encoder: BiEncoder | None = None,
                vectors: dict[str, np.ndarray] | None = None,
                weightings: list[dict[str, float] | None] | None = None,
                index: CoOccurrenceIndex | None = None) -> list[list[float]]:
    """NDCG@10 of the fused retrieval that serves (every source, no reranker, the served diversity)
    for each ``(user, history, target)``; one list per entry of ``weightings`` (fusion weights over
    the served ones; default: as served). The collaborative signal reads ``index`` (the log as it
    stood before the targets, ``replayed_before_newest``); without one, the log's own index with
    the user's events left out, as the ranker's trainer does. Without ``vectors``: the served
    catalogue. With them (and the ``encoder`` that made them, for queries): the catalogue written
    with those vectors into scratch collections (``_scratch``)."""
    with _scratch(engine, encoder, vectors) as wired:
        return [_ndcg(wired(weights, index), cases, index is None) for weights in weightings or [None]]


def _slice_ndcg(recommender: Recommender, cases: list[SliceCase]) -> list[float]:
    """NDCG@10 of ``recommender`` (the served diversity, no reranker) on one slice's cases; a
    preference-only case asks as a never-seen user who stated its preferences."""
    if any(c.preferences for c in cases):
        recommender = with_stated_preferences(recommender, cases)
    out = []
    for case in cases:
        req = slice_request(case, 10, PROFILE_ITEMS, diversity=None)
        ids = [i.id for i in recommender.recommend(req).items]
        out.append(metrics.ndcg_at(metrics.target_rank(ids, case.target), 10))
    return out


def _other_slices(wired: Callable[..., Recommender], weights: dict[str, float], cases: dict[str, list[SliceCase]],
                  before_newest: CoOccurrenceIndex, cold_index: CoOccurrenceIndex) -> dict[str, list[float]]:
    """NDCG@10 per case of the slices "all" does not already hold: cold users and preference-only
    users over the log before the newest items, cold items over that log without their interactions."""
    return {name: _slice_ndcg(wired(weights, cold_index if name == "cold_items" else before_newest), group)
            if group else [] for name, group in cases.items() if name not in ("all", "long_tail")}


def _mean_pair_cosine(vectors: np.ndarray, seed: int, pairs: int = 20000) -> float:
    """How crowded a space is: the mean cosine of random pairs of (unit) item vectors."""
    if len(vectors) < 2:
        return 0.0
    i, j = np.random.default_rng(seed).integers(len(vectors), size=(2, pairs))
    keep = i != j
    return float(np.mean(np.sum(vectors[i[keep]] * vectors[j[keep]], axis=1)))


def catalogue_vectors(engine: Engine, encoder: BiEncoder | None = None) -> dict[str, np.ndarray]:
    """Every item's vector: as stored (encoder None) or re-encoded with ``encoder``."""
    out = {}
    for points in scroll_all(engine.store, engine.catalogue.collection, with_vectors=encoder is None):
        if encoder is None:
            out.update({p.id: p.vector for p in points})
        elif points:
            vecs = encoder.encode([item_text(p.payload) for p in points], batch_size=128)
            out.update({p.id: v for p, v in zip(points, vecs)})
    return out


@dataclass
class _Fit:
    """A model trained by ``_fit`` and the catalogue's vectors as it writes them."""

    encoder: BiEncoder
    raw: dict[str, np.ndarray]  # before centring
    vectors: dict[str, np.ndarray]  # as the model serves them
    raw_matrix: np.ndarray
    epochs: list[Any]
    pairs: int


def _fit(engine: Engine, settings: EncoderTrainingSettings, trained: dict[str, list[str]], rng: random.Random,
         progress_factory: Callable[[str, int], Any] | None) -> _Fit:
    """Train a new model from the base encoder on ``trained`` (each user's sequence as the model may
    learn it): contrastive fine-tuning on (item -> next item) pairs, then the catalogue's centre."""
    encoder = BiEncoder(engine.encoder.model_path, device=settings.device)
    encoder.center = None  # measured afresh for the new weights below
    cases = next_item_cases(trained, list(trained), settings.positions_per_user, left_out=0)
    rng.shuffle(cases)
    cases = cases[: settings.max_pairs]
    wanted = list({i for _, h, t in cases for i in (h[-1], t)})
    payloads = {p.id: p.payload for p in engine.catalogue.get_many(wanted).values()}
    pairs = [(item_text(payloads[h[-1]]), item_text(payloads[t])) for _, h, t in cases
             if t in payloads and h[-1] in payloads]
    bar = progress_factory("train encoder", settings.epochs * len(pairs)) if progress_factory else None
    epochs = train_contrastive(encoder, pairs, epochs=settings.epochs, batch_size=settings.batch_size,
                               lr=settings.lr, seed=settings.seed, on_batch=bar.update if bar else None)
    tuned_raw = catalogue_vectors(engine, encoder)
    raw_matrix = np.stack(list(tuned_raw.values()))
    encoder.center = raw_matrix.mean(axis=0).astype(np.float32)  # saved with the model (see BiEncoder)
    tuned_vectors = dict(zip(tuned_raw, centred(raw_matrix, encoder.center)))
    if bar is not None:
        bar.close()
    return _Fit(encoder, tuned_raw, tuned_vectors, raw_matrix, epochs, len(pairs))


def train_encoder(engine: Engine, models_dir: Path, settings: EncoderTrainingSettings | None = None,
                  progress_factory: Callable[[str, int], Any] | None = None) -> dict[str, Any]:
    settings = settings or EncoderTrainingSettings()
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    log_seq = engine.log.max_seq()  # what it learned from: forgetting a user reports it
    read_users = engine.index.user_ids()
    sequences = log_sequences(engine.log, engine.index)
    if len(sequences) < 2:
        raise ValueError(f"too little data: {len(sequences)} users with two or more items")
    gap = settings.validation_gap
    if gap < 1:
        raise ValueError(f"validation_gap must be 1 or more (each user's newest items left out of training; "
                         f"the newest is the validation target), got {gap}")
    # The items validation treats as new (the cold-items slice): a seeded share the model never
    # learns from, or the slice would measure a model that learned them (docs/research.md, "Leaks").
    cold = held_out_items(sequences, COLD_ITEM_SHARE, settings.seed)
    # What the model learns from: every user's sequence without its ``gap`` newest items and
    # without the cold items.
    trained = without_items({u: seq[:len(seq) - gap] for u, seq in sequences.items()}, cold)
    trained = {u: seq for u, seq in trained.items() if len(seq) > 1}
    if not trained:
        raise ValueError(f"no training examples: with validation_gap {gap} a user needs {gap + 2} or "
                         "more items; log more events or lower the gap")
    # Judged as the offline evaluation replays the log: each user's newest item is the target, and
    # the collaborative signal knows the log as it stood before every user's newest item.
    judged = judged_users(sequences, settings.validation_users, settings.max_validation_users, rng)
    before_newest = replayed_before_newest(sequences)
    validation_cases = [(sequences[u][:-1], sequences[u][-1]) for u in judged]
    fused_cases = [(u, sequences[u][:-1], sequences[u][-1]) for u in judged]
    head = {i for i, _ in before_newest.popular(round(engine.catalogue.count() * settings.long_tail_head))}
    # Every slice of the offline evaluation, on the same users' newest items (``slice_cases``); the
    # cold items' scoring knows nothing of their interactions.
    cases = slice_cases(sequences, judged, head,
                        item_categories(engine.catalogue, {i for u in judged for i in sequences[u][:-1]}), cold)
    assert [(c.user, c.target) for c in cases["all"]] == [(u, t) for u, _, t in fused_cases]
    cold_index = index_of({u: [i for i in seq[:-1] if i not in cold] for u, seq in sequences.items()})
    tail = [n for n, (_, target) in enumerate(validation_cases) if target not in head]
    decay = engine.config.profiles.position_decay
    served_lexical = engine.recommender.sources["lexical"].history_weight
    served_dense = engine.recommender.sources["dense_profile"].without_query_weight
    served = (served_lexical, served_dense)
    # (BM25 weight over history titles, profile weight without a query), the served pair first.
    grid = [served] + sorted({(lw, dw) for lw in settings.lexical_weights
                              for dw in settings.dense_profile_weights} - {served}, key=lambda p: (-p[0], p[1]))
    stored = catalogue_vectors(engine, None)
    baseline_dense = dense_ndcg(stored, validation_cases, decay)
    with _scratch(engine) as wired:
        current_by = {p: _ndcg(wired(fusion_weights(p), before_newest), fused_cases, False) for p in grid}
        current_slices = _other_slices(wired, fusion_weights(served), cases, before_newest, cold_index)
    baseline_cases = current_by[served]

    fit = _fit(engine, settings, trained, rng, progress_factory)
    encoder, tuned_raw, tuned_vectors, raw_matrix = fit.encoder, fit.raw, fit.vectors, fit.raw_matrix
    # The verdict is on what serves: the fused retrieval. Dense retrieval alone is recorded beside
    # it; a model can win there and lose in the fused pipeline (docs/research.md, "Judging the
    # encoder").
    with _scratch(engine, encoder, tuned_vectors) as wired:
        tuned_by = {p: _ndcg(wired(fusion_weights(p), before_newest), fused_cases, False) for p in grid}
        # The best pair for the new encoder; on a tie the served one, then the grid's order.
        chosen = max(grid, key=lambda p: (float(np.mean(tuned_by[p] or [0.0])), p == served))
        tuned_slices = _other_slices(wired, fusion_weights(chosen), cases, before_newest, cold_index)
    tuned_cases = tuned_by[chosen]
    dense = {"current_encoder_ndcg@10": float(np.mean(baseline_dense or [0.0])),
             "fine_tuned_ndcg@10": float(np.mean(dense_ndcg(tuned_vectors, validation_cases, decay) or [0.0])),
             "fine_tuned_without_centring_ndcg@10":
                 float(np.mean(dense_ndcg(tuned_raw, validation_cases, decay) or [0.0]))}
    better, gain, se = clearly_better(tuned_cases, baseline_cases, min_relative=MIN_RELATIVE_GAIN)
    # The weights alone must not be the gain: at the chosen weights the new encoder must be clearly
    # better than the old one too (else the switch is the weights, not a reindex): a gain that is
    # the weights' alone has passed a looser rule before (docs/research.md, "Judging the encoder";
    # the stage table's "zero-shot at the encoder's weights" column, ``make eval-stages``).
    own_better, own_gain, own_se = clearly_better(tuned_cases, current_by[chosen])
    # Nor may it buy the gain on popular targets with the tail: the targets that follow a log run
    # to the tail more than the log's own newest items, and a model that learned the head relearns
    # what the collaborative source reads already (docs/research.md, "Judging the encoder").
    tail_worse, tail_loss, tail_se = clearly_better([current_by[chosen][n] for n in tail],
                                                    [tuned_cases[n] for n in tail], SLICE_WORSE_MARGIN)
    # Nor any slice the evaluation reports: the new encoder at its weights against what serves, on
    # cold items, cold users, preference-only users and the long tail (``judge_every_slice``).
    slices = judge_every_slice(
        score_slices(cases, lambda name, _: tuned_cases if name == "all" else tuned_slices[name]),
        score_slices(cases, lambda name, _: baseline_cases if name == "all" else current_slices[name]))
    accepted = better and own_better and not tail_worse and slices.accepted
    baseline, tuned = float(np.mean(baseline_cases or [0.0])), float(np.mean(tuned_cases or [0.0]))
    verdict = ("clearly better" if better else "not clearly better") + (
        "" if own_better or not better else "; but not clearly better than the current encoder at those weights") + (
        "; but clearly worse on long-tail targets" if better and own_better and tail_worse else "") + (
        "" if slices.accepted or not better else "; but " + slices.reason.split(":")[0])
    by_weight = [{**fusion_weights(p), "current_encoder_ndcg@10": float(np.mean(current_by[p] or [0.0])),
                  "fine_tuned_ndcg@10": float(np.mean(tuned_by[p] or [0.0]))} for p in grid]
    metadata = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": engine.encoder.model_path, "accepted": accepted, "log_seq": log_seq,
        "reason": (f"validation NDCG@10 of the fused retrieval {tuned:.4f} ({_weights_text(chosen)}) vs "
                   f"current encoder as served {baseline:.4f} ({_weights_text(served)}): {gain:+.4f} "
                   f"(standard error {se:.4f}), {verdict}; the encoder's own part at those weights: "
                   f"{own_gain:+.4f} (standard error {own_se:.4f}), on {len(tail)} long-tail targets "
                   f"{-tail_loss:+.4f} (standard error {tail_se:.4f}); dense retrieval alone "
                   f"{dense['fine_tuned_ndcg@10']:.4f} vs {dense['current_encoder_ndcg@10']:.4f}; judged {gap} "
                   f"step(s) past the end of its training data, on {len(judged)} users' newest items; "
                   f"every slice against what serves: {slices.reason}"),
        "validation": {"current_encoder_ndcg@10": baseline, "fine_tuned_ndcg@10": tuned, "gain": gain,
                       "standard_error": se, "encoder_gain_at_chosen_weights": own_gain,
                       "encoder_gain_standard_error": own_se, "by_fusion_weights": by_weight,
                       "long_tail": {"users": len(tail), "encoder_gain_at_chosen_weights": -tail_loss,
                                     "standard_error": tail_se},
                       "users": len(judged), "dense": dense,
                       # NDCG@10 per slice, the new encoder at its weights against what serves.
                       "slices": slices.slices, "slices_accepted": slices.accepted,
                       "cold_items_held_out": len(cold)},
        "fusion_weights": fusion_weights(chosen),
        "pairs_kind": "item -> next item",
        "centre": {"norm": float(np.linalg.norm(encoder.center)) if encoder.center is not None else None,
                   "mean_cosine_random_pairs": _mean_pair_cosine(raw_matrix, settings.seed)},
        "pairs": fit.pairs, "train_users": len(trained), "epochs": [asdict(e) for e in fit.epochs],
        "settings": asdict(settings), "seconds": time.perf_counter() - started,
    }
    metadata["accepted"], metadata["reason"], metadata["forgotten_while_training"] = withheld_if_forgotten(
        engine.log, read_users, log_seq, accepted, metadata["reason"])
    versions = ModelVersions(models_dir)
    version = versions.save(encoder.save, metadata)
    metadata.update(version=version, path=str(versions.path(version)))
    return metadata
