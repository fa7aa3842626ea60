"""Reranking: learn from the event log how to reorder the top of the fused list, accept the
model only if it beats retrieval on users' newest items, keep it versioned.

Two learners, one verdict. The ranker (gradient-boosted trees over each candidate's retrieval
evidence, ``ranking.features``) learns from lists: for a user's sequence S, the candidates retrieval
gives for S[:t] (without the user's own log, or their future would vote for itself), labelled by
whether each one is S[t]. The cross-encoder, when trained, learns from groups: the context S[:t]
as text, the positive S[t], hard negatives (retrieval's own top items the user did not take) and
random ones; its score becomes one more column of the ranker's features, on lists it never
trained on. The newest item of every user is held out of training, and validation judges it;
the served variant (ranker alone, or ranker + cross-encoder) is the one that won
validation NDCG@10, and only if it beat the retrieval order.

Lists are the pool a ranker reorders (``RecommendConfig.ranker_pool_weights``), which may be fused
otherwise than the order served without a ranker (a fine-tuned encoder's layout tunes that order);
validation then compares the ranker with the served order, which is what it replaces.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sklearn

from encoders.cross_encoder import CrossEncoderReranker
from encoders.device import resolve_device
from encoders.text import candidate_text, context_text
from encoders.training import RerankGroup, train_listwise
from retrieval.evaluation import metrics
from retrieval.pipeline.recommender import Recommender
from retrieval.ranking.features import NO_OPINION_COLUMN, rank_candidates
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import CONTEXT_ITEMS, RankInputs, rank_inputs, rank_order, with_cross_encoder
from retrieval.registry import CROSS_ENCODER_FOLDER, RerankerVersions
from retrieval.training.protocol import (
    clearly_better,
    judged_users,
    log_sequences,
    next_item_cases,
    retrieve_past_moment,
)
from retrieval.training.settings import TrainingSettings


@dataclass
class TrainingReport:
    version: str | None
    accepted: bool
    reason: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RankList:
    """One training or validation case: the retrieval's candidates, their features, the target."""

    user: str
    target: str
    inputs: RankInputs
    # The retrieval order served without a ranker, where the pool is fused otherwise (validation
    # compares the ranker with what it replaces); None: the pool's own order.
    served: list[str] | None = None

    def labels(self) -> np.ndarray:
        return np.array([i == self.target for i in self.inputs.ids], dtype=np.int8)


def _context(history: list[str], payloads: dict[str, Any]) -> str:
    """The cross-encoder's query side, read exactly as serving reads it (``rerank.rank_inputs``)."""
    return context_text([payloads[i] for i in reversed(history[-CONTEXT_ITEMS:]) if i in payloads])


def build_list(recommender: Recommender, user: str, history: list[str], target: str, candidates: int,
               texts: bool = True) -> RankList:
    items = retrieve_past_moment(recommender, user, history, candidates, ranker_pool=True)
    inputs = rank_inputs(recommender.catalogue, recommender.profiles.index, history, rank_candidates(items),
                         leave_out_user=user, texts=texts)
    return RankList(user, target, inputs)


class _Quiet:
    """Progress when nobody asked for a bar."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def build_groups(recommender: Recommender, cases: list[tuple[str, list[str], str]], settings: TrainingSettings,
                 rng: random.Random, all_ids: list[str],
                 progress: Callable[[int], None] | None = None) -> list[RerankGroup]:
    """Cross-encoder training groups: (context, positive, hard + random negatives) per case."""
    catalogue = recommender.catalogue
    groups = []
    for user, history, target in cases:
        hard = [i.id for i in retrieve_past_moment(recommender, user, history, settings.hard_negatives + 5,
                                                   ranker_pool=True) if i.id != target]
        hard = hard[: settings.hard_negatives]
        randoms = [i for i in rng.sample(all_ids, min(len(all_ids), settings.random_negatives + 3))
                   if i != target and i not in hard and i not in history][: settings.random_negatives]
        payloads = catalogue.get_many(list({*history[-CONTEXT_ITEMS:], target, *hard, *randoms}))
        if target not in payloads:
            continue
        negatives = tuple(candidate_text(payloads[i].payload) for i in hard + randoms if i in payloads)
        if negatives:
            groups.append(RerankGroup(_context(history, {k: v.payload for k, v in payloads.items()}),
                                      candidate_text(payloads[target].payload), negatives))
        if progress is not None:
            progress(1)
    return groups


def _stack(lists: list[RankList]) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate the ranker will order: those without collaborative opinion keep their place
    when serving (``rerank.rank_order``), so they are not trained on either."""
    features = np.concatenate([rl.inputs.features for rl in lists])
    labels = np.concatenate([rl.labels() for rl in lists])
    ordered = features[:, NO_OPINION_COLUMN] == 0
    return features[ordered], labels[ordered]


def validate(lists: list[RankList], orders: dict[str, Callable[[RankList], list[str]]],
             catalogue_size: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """NDCG@10 / Recall@10 of each order on held-out lists, plus coverage and Gini of the top-10
    lists (the collapse guard); one Gini universe (every candidate any order could show) for all.
    Also each order's NDCG@10 per list, for the paired accept rule."""
    universe = sorted({i for rl in lists for i in rl.inputs.ids})
    out, per_case = {}, {}
    for name, order in orders.items():
        ranked = [order(rl) for rl in lists]
        ranks = [metrics.target_rank(r, rl.target) for r, rl in zip(ranked, lists)]
        per_case[name] = [metrics.ndcg_at(x, 10) for x in ranks]
        out[name] = {
            "ndcg@10": float(np.mean(per_case[name])) if ranks else 0.0,
            "recall@10": float(np.mean([metrics.recall_at(x, 10) for x in ranks])) if ranks else 0.0,
            "coverage@10": metrics.coverage([r[:10] for r in ranked], catalogue_size, 10),
            "gini@10": metrics.gini([r[:10] for r in ranked], universe, 10),
            "users": len(ranks),
        }
    return out, per_case


def _verdict(validation: dict[str, Any], per_case: dict[str, list[float]]) -> tuple[str, bool, str]:
    """The best learned variant, whether it is accepted, and why: it must beat the retrieval order
    by more than the noise of the comparison (``clearly_better``) and must not collapse."""
    base = validation["retrieval"]
    best_name, best = max(((k, v) for k, v in validation.items() if k != "retrieval"),
                          key=lambda kv: kv[1]["ndcg@10"])
    better, gain, se = clearly_better(per_case[best_name], per_case["retrieval"])
    # Collapse guard: a model that concentrates lists on few items is refused even if NDCG rose.
    collapsed = best["coverage@10"] < 0.5 * base["coverage@10"] or best["gini@10"] > base["gini@10"] + 0.1
    accepted = better and not collapsed
    comparison = (f"validation NDCG@10 {best['ndcg@10']:.4f} ({best_name}) vs retrieval {base['ndcg@10']:.4f}: "
                  f"{gain:+.4f}, standard error {se:.4f}")
    if collapsed:
        reason = (f"collapse guard: coverage@10 {best['coverage@10']:.3f} vs {base['coverage@10']:.3f}, "
                  f"gini@10 {best['gini@10']:.3f} vs {base['gini@10']:.3f}")
    elif accepted:
        reason = f"{comparison}, clearly better"
    else:
        reason = f"{comparison}, not clearly better"
    return best_name, accepted, reason


def train_reranker(recommender: Recommender, versions: RerankerVersions, settings: TrainingSettings | None = None,
                   progress_factory: Callable[[str, int], Any] | None = None) -> TrainingReport:
    """Build lists (and groups), train, validate, and save the model with its verdict. Only an
    accepted model can ever be loaded for serving."""
    started = time.perf_counter()
    settings = settings or TrainingSettings()
    use_cross_encoder = settings.uses_cross_encoder()
    candidates = settings.candidates or recommender.config.rerank_candidates
    rng = random.Random(settings.seed)
    log_seq = recommender.profiles.log.max_seq()  # what it learned from: forgetting a user reports it
    sequences = log_sequences(recommender.profiles.log, recommender.profiles.index)
    if len(sequences) < 2:
        return TrainingReport(None, False, f"too little data: {len(sequences)} users with two or more items")
    # Every user's steps before their newest item are training lists; a seeded sample of users'
    # newest items is what validation judges (no user is held out: see ``TrainingSettings``).
    train_users = sorted(sequences)
    val_users = judged_users(sequences, settings.validation_users, settings.max_validation_users, rng)

    def bar(desc: str, total: int):
        return progress_factory(desc, total) if progress_factory else _Quiet()

    cases = next_item_cases(sequences, train_users, settings.positions_per_user)
    rng.shuffle(cases)
    list_cases = cases[: settings.max_lists]
    # The cross-encoder learns from other cases than the ranker's lists, so its score on those
    # lists is what it will be on unseen requests, not a memorised one.
    group_cases = cases[settings.max_lists: settings.max_lists + settings.max_groups] or cases[: settings.max_groups]

    def build_all(desc: str, work: list[tuple[str, list[str], str]]) -> list[RankList]:
        b, out = bar(desc, len(work)), []
        for user, history, target in work:
            out.append(build_list(recommender, user, history, target, candidates, texts=use_cross_encoder))
            b.update(1)
        b.close()
        return out

    lists = build_all("ranking lists", list_cases)
    val_lists = build_all("validation lists", [(u, sequences[u][:-1], sequences[u][-1]) for u in val_users])
    if recommender.pool_weights is not None:
        b = bar("served order", len(val_lists))
        for rl in val_lists:
            rl.served = [i.id for i in retrieve_past_moment(recommender, rl.user, sequences[rl.user][:-1], 10)]
            b.update(1)
        b.close()
    if not any(rl.labels().any() for rl in lists):
        return TrainingReport(None, False, "no next item was ever among the retrieved candidates: nothing to learn")

    cross_encoder, epochs, groups = None, [], []
    if use_cross_encoder:
        all_ids = sorted({i for seq in sequences.values() for i in seq})
        b = bar("cross-encoder groups", len(group_cases))
        groups = build_groups(recommender, group_cases, settings, rng, all_ids, progress=b.update)
        b.close()
        cross_encoder = CrossEncoderReranker(device=settings.device)
        b = bar("train cross-encoder", settings.epochs * len(groups))
        epochs = train_listwise(cross_encoder, groups, epochs=settings.epochs, seed=settings.seed, on_batch=b.update)
        b.close()
        cross_encoder.for_inference()
        b = bar("cross-encoder scores", len(lists) + len(val_lists))
        for rl in lists + val_lists:
            rl.inputs.features = with_cross_encoder(rl.inputs, cross_encoder)
            b.update(1)
        b.close()

    features, labels = _stack(lists)
    variants = {"ranker": RankingModel.fit(features, labels, seed=settings.seed)}
    if cross_encoder is not None:
        variants["ranker+cross_encoder"] = RankingModel.fit(features, labels, uses_cross_encoder=True,
                                                            seed=settings.seed)

    def ordered_by(model: RankingModel) -> Callable[[RankList], list[str]]:
        return lambda rl: [r.id for r in rank_order(model, rl.inputs.ids, rl.inputs.features)]

    orders = {"retrieval": lambda rl: rl.inputs.ids if rl.served is None else rl.served,
              **{name: ordered_by(m) for name, m in variants.items()}}
    validation, per_case = validate(val_lists, orders, recommender.catalogue.count())
    best_name, accepted, reason = _verdict(validation, per_case)
    served = variants[best_name]
    serves_cross_encoder = served.uses_cross_encoder

    def write(folder):
        served.save(folder)
        if serves_cross_encoder:
            cross_encoder.save(folder / CROSS_ENCODER_FOLDER)

    metadata = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "accepted": accepted,
        "reason": reason,
        "base_model": (f"gradient-boosted trees (scikit-learn {sklearn.__version__}) over retrieval evidence"
                       + (f" + cross-encoder fine-tuned from {cross_encoder.model_path}" if serves_cross_encoder else "")),
        "log_users": len(sequences),
        "log_seq": log_seq,
        "ranker": {"cross_encoder": serves_cross_encoder, "variant": best_name,
                   "lists": len(lists), "rows": int(len(labels)), "positives": int(labels.sum())},
        "cross_encoder": ({"trained": True, "base_model": cross_encoder.model_path, "groups": len(groups),
                           "pairs_per_epoch": epochs[0].pairs if epochs else 0,
                           "epochs": [e.__dict__ for e in epochs], "kept": serves_cross_encoder}
                          if cross_encoder is not None else
                          {"trained": False, "why": f"cross_encoder={settings.cross_encoder} on "
                                                   f"{resolve_device(settings.device)}"}),
        "train_users": len(train_users), "validation_users": len(val_users),
        "pool_weights": recommender.config.ranker_pool_weights or recommender.config.weights,
        "validation": validation,
        "settings": settings.__dict__,
        "seconds": time.perf_counter() - started,
    }
    version = versions.save(write, metadata)
    return TrainingReport(version, accepted, reason, {**metadata, "version": version})
