"""Reranking: learn from the event log how to reorder the top of the fused list, accept the
model only if it beats retrieval on users' newest items, keep it versioned.

Two learners, one verdict. The ranker (gradient-boosted trees over each candidate's retrieval
evidence, ``ranking.features``) learns from lists: for a user's sequence S, the candidates retrieval
gives for S[:t] (without the user's own log, or their future would vote for itself), labelled by
whether each one is S[t]. The cross-encoder, when trained, learns from groups: the context S[:t]
as text, the positive S[t], hard negatives (retrieval's own top items the user did not take) and
random ones; its score becomes one more column of the ranker's features, on lists it never
trained on. The newest item of every user is held out of training, and validation judges it;
the served variant (ranker alone, or reading the cross-encoder or a sequence encoder) is the best
on validation NDCG@10 among those clearly better than every variant reading only some of their
models (``fewer_models``), and only if it beats the retrieval order on every user and costs no slice.

Lists are the pool a ranker reorders (``RecommendConfig.ranker_pool_weights``), which may be fused
otherwise than the order served without a ranker (a fine-tuned encoder's layout tunes that order);
validation then compares the ranker with the served order, which is what it replaces.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from encoders.cross_encoder import CrossEncoderReranker
from encoders.device import resolve_device
from encoders.sequence import SequenceModel
from encoders.text import candidate_text, context_text
from encoders.training import RerankGroup, train_listwise
from retrieval.evaluation import metrics
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.sources import LoadedSequence
from retrieval.ranking.features import FEATURE_NAMES, NO_OPINION_COLUMN, rank_candidates
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import CONTEXT_ITEMS, RankInputs, rank_inputs, rank_order, with_cross_encoder_many
from retrieval.registry import CROSS_ENCODER_FOLDER, RANKER_SEQUENCE_FOLDER, RerankerVersions, sequence_left_out
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.training.protocol import (
    COLD_ITEM_SHARE,
    LONG_TAIL_HEAD,
    MIN_RELATIVE_GAIN,
    PAST_MOMENT,
    SliceVerdict,
    clearly_better,
    held_out_items,
    index_of,
    judge_every_slice,
    judged_users,
    log_sequences,
    next_item_cases,
    retrieve_past_moment,
    slice_cases,
    withheld_if_forgotten,
    without_items,
)
from retrieval.training.settings import TrainingSettings


@dataclass
class TrainingReport:
    version: str | None
    accepted: bool
    reason: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Every variant fitted on the same lists, served or not (not saved): a benchmark measures them
    # side by side without building the lists twice.
    variants: dict[str, RankingModel] = field(default_factory=dict, repr=False)


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
               texts: bool = True, index: CoOccurrenceIndex | None = None,
               sequence: SequenceModel | None = None) -> RankList:
    """A ranking list; its features read ``index`` (default: the profiles' own; the cold-items
    slice passes the one its ``recommender`` retrieves with, without the cold items' interactions)
    and, given one, the ``sequence`` encoder's similarity."""
    items = retrieve_past_moment(recommender, user, history, candidates, ranker_pool=True)
    inputs = rank_inputs(recommender.catalogue, index or recommender.profiles.index, history, rank_candidates(items),
                         leave_out_user=user, texts=texts, sequence=sequence)
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


def _verdict(validation: dict[str, Any], per_case: dict[str, list[float]],
             slices: dict[str, SliceVerdict] | None = None, among: list[str] | None = None) -> tuple[str, bool, str]:
    """The best learned variant (of ``among``, default every one), whether it is accepted, and
    why: it must beat the retrieval order by more than the noise of the comparison
    (``clearly_better``), must not collapse, and (given ``slices``, each variant's
    ``judge_every_slice`` against retrieval) must be clearly worse on no slice."""
    base = validation["retrieval"]
    best_name, best = max(((k, v) for k, v in validation.items() if k != "retrieval" and (among is None or k in among)),
                          key=lambda kv: kv[1]["ndcg@10"])
    better, gain, se = clearly_better(per_case[best_name], per_case["retrieval"], min_relative=MIN_RELATIVE_GAIN)
    # Collapse guard: a model that concentrates lists on few items is refused even if NDCG rose.
    fell = collapsed(best, base)
    slice_ok = slices is None or slices[best_name].accepted
    accepted = better and not fell and slice_ok
    comparison = (f"validation NDCG@10 {best['ndcg@10']:.4f} ({best_name}) vs retrieval {base['ndcg@10']:.4f}: "
                  f"{gain:+.4f}, standard error {se:.4f}")
    if fell:
        reason = (f"collapse guard: coverage@10 {best['coverage@10']:.3f} vs {base['coverage@10']:.3f}, "
                  f"gini@10 {best['gini@10']:.3f} vs {base['gini@10']:.3f} ({best_name})")
    elif better and not slice_ok:
        reason = f"{comparison}, clearly better, but {slices[best_name].reason}"
    elif accepted:
        reason = f"{comparison}, clearly better" + (f"; {slices[best_name].reason}" if slices else "")
    else:
        reason = f"{comparison}, not clearly better (more than a standard error and at least {MIN_RELATIVE_GAIN:.0%})"
    return best_name, accepted, reason


# Exposure: a ranker that concentrates its lists on fewer items than retrieval (Gini@10 up by more
# than this, or coverage@10 down to less than this share of retrieval's) is corrected by blending
# it with retrieval's order; the collapse guard (``_verdict``) refuses outright beyond twice that.
EXPOSURE_GINI_RISE = 0.02
EXPOSURE_COVERAGE_SHARE = 0.9
# The retrieval order's weight in a blend (``blended``), tried in this order; validation chooses.
# The blend mixes probabilities, and a ranker's are sharper than the one retrieval's place alone
# gives, so the weights that move exposure are high (on lists where popular items win half the
# time, Gini@10 fell back within the collapse guard's 0.1 only at 0.95: tests/retrieval/test_slice_verdict.py).
BLEND_WEIGHTS = (0.5, 0.75, 0.9, 0.95, 0.98)
POSITION_FEATURE = "fused_position_log"
# Training lists whose cross-encoder pairs are scored in one call (a batch of hundreds on a GPU).
SCORED_TOGETHER = 32


def collapsed(row: dict[str, Any], base: dict[str, Any]) -> bool:
    """The collapse guard: lists concentrated on few items, refused even if NDCG rose."""
    return row["coverage@10"] < 0.5 * base["coverage@10"] or row["gini@10"] > base["gini@10"] + 0.1


def concentrates(row: dict[str, Any], base: dict[str, Any]) -> bool:
    """Exposure narrower than retrieval's by more than the noise of a ranker that does not change it."""
    return (row["gini@10"] > base["gini@10"] + EXPOSURE_GINI_RISE
            or row["coverage@10"] < EXPOSURE_COVERAGE_SHARE * base["coverage@10"])


def blended(model: RankingModel, features: np.ndarray, labels: np.ndarray, weight: float) -> RankingModel:
    """``model`` blended with retrieval's order: the probability that a candidate is the next item,
    ``(1 - weight)`` times the ranker's plus ``weight`` times what its place in retrieval's list alone
    says (a logistic fit on ``POSITION_FEATURE`` over the same training rows). A soft vote of two
    scikit-learn estimators, so the served ranker loads and scores it as any other (the trees are
    frozen: not refitted)."""
    read = list(model.read)
    x = features[:, [FEATURE_NAMES.index(n) for n in read]]
    position = make_pipeline(ColumnTransformer([("position", "passthrough", [read.index(POSITION_FEATURE)])]),
                             LogisticRegression())
    vote = VotingClassifier([("ranker", FrozenEstimator(model.trees)), ("retrieval", position)],
                            voting="soft", weights=[1.0 - weight, weight]).fit(x, labels)
    return RankingModel(vote, model.uses_cross_encoder, model.feature_names, model.uses_sequence)


def slice_scores(order: Callable[[RankList], list[str]], lists: dict[str, list[RankList]]) -> dict[str, list[float]]:
    """NDCG@10 of ``order`` on each slice's lists."""
    return {name: [metrics.ndcg_at(metrics.target_rank(order(rl), rl.target), 10) for rl in group]
            for name, group in lists.items()}


def ordered_by(model: RankingModel) -> Callable[[RankList], list[str]]:
    return lambda rl: [r.id for r in rank_order(model, rl.inputs.ids, rl.inputs.features)]


def retrieval_order(rl: RankList) -> list[str]:
    """What a ranker replaces: the order served without one."""
    return rl.inputs.ids if rl.served is None else rl.served


@dataclass
class Judge:
    """Validation: the lists of every judged user's newest item ("all"), each slice's lists (the
    same objects for "all" and "long_tail"), and the catalogue's size (coverage)."""

    lists: list[RankList]
    slices: dict[str, list[RankList]]
    catalogue_size: int

    def __call__(self, models: dict[str, RankingModel]) -> tuple[dict[str, Any], dict[str, list[float]],
                                                                  dict[str, SliceVerdict]]:
        """Each order's validation row, NDCG@10 per list, and slice verdict against retrieval."""
        orders = {"retrieval": retrieval_order, **{name: ordered_by(m) for name, m in models.items()}}
        validation, per_case = validate(self.lists, orders, self.catalogue_size)
        on_slices = {name: slice_scores(order, self.slices) for name, order in orders.items()}
        verdicts = {name: judge_every_slice(on_slices[name], on_slices["retrieval"]) for name in models}
        return validation, per_case, verdicts


@dataclass
class Choice:
    """What serves: the learned variant, the model (the variant, or its blend with retrieval's
    order), whether it is accepted and why; validation rows of the variants, their slice verdicts
    (blends' too), the exposure correction tried, and each variant that reads one more model
    against the variant without it."""

    variant: str
    model: RankingModel
    accepted: bool
    reason: str
    validation: dict[str, Any]
    verdicts: dict[str, SliceVerdict]
    exposure: dict[str, Any]
    added_models: dict[str, Any] = field(default_factory=dict)


def reads(variant: str) -> set[str]:
    """The models a variant reads besides the trees' retrieval evidence: those its name adds.

    >>> sorted(reads("ranker+cross_encoder+sequence"))
    ['cross_encoder', 'sequence']
    """
    return set(variant.split("+")[1:])


def fewer_models(variants: Collection[str]) -> dict[str, tuple[str, ...]]:
    """For each variant that reads added models, the variants (among ``variants``) that read only
    some of them: one model fewer first.

    >>> fewer_models(["ranker", "ranker+cross_encoder", "ranker+sequence", "ranker+cross_encoder+sequence"])[
    ...     "ranker+cross_encoder+sequence"]
    ('ranker+cross_encoder', 'ranker+sequence', 'ranker')
    """
    out = {}
    for name in variants:
        models = sorted(reads(name))
        subsets = [kept for size in range(len(models) - 1, -1, -1) for kept in combinations(models, size)]
        simpler = tuple(other for other in ("+".join(["ranker", *kept]) for kept in subsets) if other in variants)
        if models and simpler:
            out[name] = simpler
    return out


def choose(judge: Judge, variants: dict[str, RankingModel], features: np.ndarray, labels: np.ndarray,
           without: dict[str, tuple[str, ...]] | None = None, only: tuple[str, ...] = ()) -> Choice:
    """The best learned variant, judged by every rule (``_verdict``). One that collapses,
    concentrates exposure (``concentrates``) or costs a slice is blended with retrieval's order at
    each of ``BLEND_WEIGHTS`` (``blended``, fitted on the training rows ``features``/``labels``);
    the best blend that passes every rule serves instead, else the variant as it was judged.

    ``without`` names, for a variant that reads added models (the cross-encoder, the sequence
    encoder), the variants that read only some of them (``fewer_models``): it is eligible only if
    clearly better than every one of them on the same lists, since each model costs its time on
    every request. ``only``: models measured, whatever their comparison says: only variants reading
    them compete, and a comparison that drops nothing but measured models is not asked to pass. A
    variant's record in ``added_models`` is its least favourable comparison (``competes``: clearly
    better there), whether it is ``eligible``, and every comparison under ``comparisons``."""
    validation, per_case, verdicts = judge(variants)
    added: dict[str, Any] = {}
    for name, simpler in (without or {}).items():
        comparisons = {}
        for other in simpler:
            better, gain, se = clearly_better(per_case[name], per_case[other], min_relative=MIN_RELATIVE_GAIN)
            comparisons[other] = {"against": other, "ndcg@10": validation[name]["ndcg@10"],
                                  "without": validation[other]["ndcg@10"], "gain": gain, "standard_error": se,
                                  "competes": better, "measured": bool(reads(name) - reads(other) <= set(only))}
        binding = [c for c in comparisons.values() if not (c["competes"] or c["measured"])]
        worst = min(binding or comparisons.values(), key=lambda c: c["gain"])
        added[name] = {**worst, "eligible": not binding, "comparisons": comparisons}
    reading = [n for n in variants if only and set(only) <= reads(n)]
    among = [n for n in (reading or variants) if n not in added or added[n]["eligible"]] or reading
    best_name, accepted, reason = _verdict(validation, per_case, verdicts, among=among)
    base, best = validation["retrieval"], validation[best_name]
    exposure: dict[str, Any] = {"tried": False, "why": None, "blends": {}, "chosen": None, "weight": None}
    why = ("trips the collapse guard" if collapsed(best, base) else "concentrates exposure"
           if concentrates(best, base) else "is clearly worse on a slice" if not verdicts[best_name].accepted
           else None)
    if why is None:
        return Choice(best_name, variants[best_name], accepted, reason, validation, verdicts, exposure, added)
    exposure.update(tried=True, why=why)
    blends = {f"{best_name}+retrieval@{w:g}": blended(variants[best_name], features, labels, w) for w in BLEND_WEIGHTS}
    tried, tried_case, blend_verdicts = judge({**variants, **blends})
    verdicts.update({name: blend_verdicts[name] for name in blends})
    for name in blends:
        _, ok, said = _verdict(tried, tried_case, blend_verdicts, among=[name])
        exposure["blends"][name] = {**tried[name], "accepted": ok, "verdict": said}
    passing = [name for name in blends if exposure["blends"][name]["accepted"]]
    if passing:
        chosen, accepted, reason = _verdict(tried, tried_case, blend_verdicts, among=passing)
        exposure.update(chosen=chosen, weight=BLEND_WEIGHTS[list(blends).index(chosen)])
        return Choice(best_name, blends[chosen], True, f"{reason}; blended with retrieval's order, as {best_name} "
                      f"alone {why}", validation, verdicts, exposure, added)
    reason += (f"; it {why}, and no blend with retrieval's order passed every rule" if accepted
               else "; no blend with retrieval's order passed every rule either")
    return Choice(best_name, variants[best_name], accepted, reason, validation, verdicts, exposure, added)


def learned_steps(sequence: LoadedSequence, settings: TrainingSettings) -> bool:
    """Whether ``sequence`` was trained on steps a ranker with ``settings`` trains on."""
    return sequence_left_out(sequence.metadata) < settings.sequence_left_out


def serving_sequence(recommender: Recommender) -> LoadedSequence | None:
    """The sequence encoder ``recommender`` reads for a past moment (None: none, or not asked)."""
    return recommender.sources["sequence"].loaded if recommender.asks("sequence", PAST_MOMENT) else None


def _refuse_learned_steps(sequence: LoadedSequence, settings: TrainingSettings, role: str, remedy: str) -> None:
    """A ranker must not read a sequence encoder, directly or through its source's lists, that was
    trained on the steps the ranker trains on (docs/research.md, "Leaks")."""
    if learned_steps(sequence, settings):
        unlearned = sequence_left_out(sequence.metadata)
        raise ValueError(
            f"sequence encoder {sequence.version} ({role}) was trained on all but each user's {unlearned} newest "
            f"items, so it learned {settings.sequence_left_out - unlearned} of the {settings.positions_per_user} "
            f"steps the ranker trains on, and the ranker would learn to trust it more than it deserves; train one "
            f"with train_sequence.left_out >= {settings.sequence_left_out} (HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT, "
            f"`hybridrec train sequence`) {remedy}")


def source_stand_in(serving: LoadedSequence | None, stand_in: LoadedSequence | None,
                    settings: TrainingSettings) -> LoadedSequence | None:
    """What the sequence source reads while the ranker's training lists are built: nothing to
    change (None) where ``serving`` never learned the ranker's steps; else ``stand_in``, an encoder
    trained without them over the same items, at the serving source's weight. Like the user's own
    events left out of the collaborative signal, the ranker learns from the source as it would be
    on an unseen step; validation and serving read the encoder that serves (it never learned the
    newest items either)."""
    if serving is None or not learned_steps(serving, settings):
        return None
    if stand_in is None:
        _refuse_learned_steps(serving, settings, "serving as the sequence source",
                              "(it need not be accepted as a source: `hybridrec train reranker` builds its training "
                              "lists with it in the source's place), or turn the source off for the service and "
                              "this training alike (recommend.sources without \"sequence\": "
                              "HYBRIDREC_RECOMMEND__SOURCES)")
    _refuse_learned_steps(stand_in, settings, "standing in for the sequence source", "")
    if stand_in.metadata.get("item_space") != serving.metadata.get("item_space"):
        raise ValueError(f"sequence encoder {stand_in.version} was trained over other item vectors than "
                         f"{serving.version}, which serves as the sequence source; train one over today's items "
                         "with `hybridrec train sequence`")
    return LoadedSequence(stand_in.version, stand_in.model, serving.weight, stand_in.metadata)


def _reading(recommender: Recommender, loaded: LoadedSequence | None) -> Recommender:
    """``recommender``'s pipeline with its sequence source reading ``loaded`` (itself for None): a
    recommender of its own, so that no follower of a shared log swaps the serving encoder back."""
    if loaded is None:
        return recommender
    own = Recommender(recommender.catalogue, recommender.profiles, recommender.profiles.index, recommender.config)
    own.sources["sequence"].loaded = loaded
    return own


def train_reranker(recommender: Recommender, versions: RerankerVersions, settings: TrainingSettings | None = None,
                   progress_factory: Callable[[str, int], Any] | None = None,
                   sequence: LoadedSequence | None = None,
                   stand_in: LoadedSequence | None = None) -> TrainingReport:
    """Build lists (and groups), train, validate, and save the model with its verdict. Only an
    accepted model can ever be loaded for serving.

    Given a trained ``sequence`` encoder (whether or not it was accepted as a source) and
    ``settings.sequence`` other than "off", variants that also read its similarity to each candidate
    are trained and judged beside the others; one that serves is saved with the encoder inside its
    version. Where the sequence source serves an encoder that learned the ranker's training steps,
    ``stand_in`` (one trained without them) takes its place on the training lists
    (``source_stand_in``); without one, training is refused."""
    started = time.perf_counter()
    settings = settings or TrainingSettings()
    if settings.sequence == "off":
        sequence = None
    if sequence is not None:
        _refuse_learned_steps(sequence, settings, "offered as a feature", "for the ranker")
    # Checked, and recorded, as it serves when training starts.
    serving = serving_sequence(recommender)
    training_source = source_stand_in(serving, stand_in, settings)
    sequence_model = sequence.model if sequence is not None else None
    use_cross_encoder = settings.uses_cross_encoder()
    candidates = settings.candidates or recommender.config.rerank_candidates
    rng = random.Random(settings.seed)
    log_seq = recommender.profiles.log.max_seq()  # what it learned from: forgetting a user reports it
    read_users = recommender.profiles.index.user_ids()
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

    # The training steps are read with the stand-in, where there is one; validation with what serves.
    training = _reading(recommender, training_source)

    def build_all(desc: str, work: list[tuple[str, list[str], str]], source: Recommender) -> list[RankList]:
        b, out = bar(desc, len(work)), []
        for user, history, target in work:
            out.append(build_list(source, user, history, target, candidates, texts=use_cross_encoder,
                                  sequence=sequence_model))
            b.update(1)
        b.close()
        return out

    lists = build_all("ranking lists", list_cases, training)
    val_lists = build_all("validation lists", [(u, sequences[u][:-1], sequences[u][-1]) for u in val_users],
                          recommender)
    # Every slice of the offline evaluation on the same users' newest items (``slice_cases``). The
    # cold items' lists are retrieved, and their features read, as if nobody had taken them; the
    # ranker learns no item's identity, so its training lists keep them. Preference-only requests
    # are never reranked (``choose_ranker``): that slice is not judged here.
    cold = held_out_items(sequences, COLD_ITEM_SHARE, settings.seed)
    taken = Counter(i for seq in sequences.values() for i in seq[:-1])
    head = {i for i, _ in taken.most_common(round(recommender.catalogue.count() * LONG_TAIL_HEAD))}
    cases = slice_cases(sequences, val_users, head, {}, cold)
    cold_index = index_of(without_items({u: recommender.profiles.index.history(u)
                                         for u in recommender.profiles.index.user_ids()}, cold))
    cold_recommender = Recommender(recommender.catalogue, recommender.profiles, cold_index, recommender.config)
    b = bar("slice lists", len(cases["cold_users"]) + len(cases["cold_items"]))
    slice_lists = {"all": val_lists, "long_tail": [rl for rl in val_lists if rl.target not in head],
                   "cold_users": [], "cold_items": []}
    for name, source, index in (("cold_users", recommender, None), ("cold_items", cold_recommender, cold_index)):
        for case in cases[name]:
            rl = build_list(source, case.user, list(case.history), case.target, candidates, texts=use_cross_encoder,
                            index=index, sequence=sequence_model)
            if recommender.pool_weights is not None:
                rl.served = [i.id for i in retrieve_past_moment(source, case.user, list(case.history), 10)]
            slice_lists[name].append(rl)
            b.update(1)
    b.close()
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
        groups = build_groups(training, group_cases, settings, rng, all_ids, progress=b.update)
        b.close()
        cross_encoder = CrossEncoderReranker(device=settings.device)
        b = bar("train cross-encoder", settings.epochs * len(groups))
        epochs = train_listwise(cross_encoder, groups, epochs=settings.epochs, seed=settings.seed, on_batch=b.update)
        b.close()
        cross_encoder.for_inference()
        extra = slice_lists["cold_users"] + slice_lists["cold_items"]
        b = bar("cross-encoder scores", len(lists) + len(val_lists) + len(extra))
        scored = lists + val_lists + extra
        for start in range(0, len(scored), SCORED_TOGETHER):
            chunk = scored[start:start + SCORED_TOGETHER]
            for rl, features in zip(chunk, with_cross_encoder_many([rl.inputs for rl in chunk], cross_encoder)):
                rl.inputs.features = features
            b.update(len(chunk))
        b.close()

    features, labels = _stack(lists)
    variants = {"ranker": RankingModel.fit(features, labels, seed=settings.seed)}
    if cross_encoder is not None:
        variants["ranker+cross_encoder"] = RankingModel.fit(features, labels, uses_cross_encoder=True,
                                                            seed=settings.seed)
    if sequence_model is not None:
        for name in list(variants):
            variants[f"{name}+sequence"] = RankingModel.fit(features, labels, uses_cross_encoder=name != "ranker",
                                                            uses_sequence=True, seed=settings.seed)
    # Each added model costs its time on every request (a transformer pass over every candidate, for
    # the cross-encoder): a variant must be clearly better than each variant that reads fewer of them.
    without = fewer_models(variants)

    judge = Judge(val_lists, slice_lists, recommender.catalogue.count())
    # The models measured: asked for with "only", and there to measure.
    only = tuple(model for model, said, there in (("cross_encoder", settings.cross_encoder, cross_encoder),
                                                  ("sequence", settings.sequence, sequence_model))
                 if said == "only" and there is not None)
    choice = choose(judge, variants, features, labels, without, only=only)
    validation, verdicts, exposure = choice.validation, choice.verdicts, choice.exposure
    best_name, accepted, reason, served = choice.variant, choice.accepted, choice.reason, choice.model
    judged_accepted = accepted
    if only:  # its own comparison was waived: a measuring run is never served
        accepted, reason = False, f"measuring the {' and '.join(only)} (only): never served; {reason}"
    accepted, reason, forgotten = withheld_if_forgotten(recommender.profiles.log, read_users, log_seq, accepted,
                                                        reason)
    serves_cross_encoder = served.uses_cross_encoder
    serves_sequence = served.uses_sequence

    def write(folder):
        served.save(folder)
        if serves_cross_encoder:
            cross_encoder.save(folder / CROSS_ENCODER_FOLDER)
        if serves_sequence:
            sequence_model.save(folder / RANKER_SEQUENCE_FOLDER)

    metadata = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "accepted": accepted,
        "reason": reason,
        # A measuring run (``only``): the models measured, and the verdict it would have had.
        "measured": {"models": list(only), "judged_accepted": judged_accepted} if only else None,
        "base_model": (f"gradient-boosted trees (scikit-learn {sklearn.__version__}) over retrieval evidence"
                       + (" blended with retrieval's order" if exposure["chosen"] else "")
                       + (f" + sequence encoder {sequence.version}" if serves_sequence else "")
                       + (f" + cross-encoder fine-tuned from {cross_encoder.model_path}" if serves_cross_encoder else "")),
        "log_users": len(sequences),
        "log_seq": log_seq,
        "forgotten_while_training": forgotten,
        "ranker": {"cross_encoder": serves_cross_encoder, "sequence": serves_sequence, "variant": best_name,
                   "retrieval_blend": exposure["weight"],  # the retrieval order's weight, if blended
                   "lists": len(lists), "rows": int(len(labels)), "positives": int(labels.sum()),
                   # NDCG@10 per slice of each variant against retrieval's order (``judge_every_slice``;
                   # preference-only requests are never reranked, so not judged), and the exposure
                   # correction tried (``blended``).
                   "slices": {name: {"accepted": v.accepted, "reason": v.reason, "slices": v.slices}
                              for name, v in verdicts.items()},
                   "exposure": exposure},
        "cross_encoder": ({"trained": True, "base_model": cross_encoder.model_path, "groups": len(groups),
                           "pairs_per_epoch": epochs[0].pairs if epochs else 0,
                           "epochs": [e.__dict__ for e in epochs], "kept": serves_cross_encoder,
                           # Each variant reading it against the same variant without it, on validation.
                           "compared": {name: row["comparisons"][name.replace("+cross_encoder", "")]
                                        for name, row in choice.added_models.items()
                                        if "cross_encoder" in reads(name)}}
                          if cross_encoder is not None else
                          {"trained": False, "why": f"cross_encoder={settings.cross_encoder} on "
                                                   f"{resolve_device(settings.device)}"}),
        # The sequence encoder offered as a feature, and each variant reading it against the same
        # variant without it on validation (it competes only if clearly better).
        "sequence": ({"version": sequence.version, "item_space": sequence.metadata.get("item_space"),
                      "accepted_as_source": bool(sequence.metadata.get("accepted")), "kept": serves_sequence,
                      "variants": {name: row["comparisons"][name.removesuffix("+sequence")]
                                   for name, row in choice.added_models.items() if name.endswith("+sequence")}}
                     if sequence is not None else None),
        # The sequence encoder serving as a source (its ranks are features), and the one that stood
        # in for it on the training lists where it had learned their steps.
        "sequence_source": ({"version": serving.version, "left_out": sequence_left_out(serving.metadata),
                             "training_lists": (training_source or serving).version}
                            if serving is not None else None),
        "train_users": len(train_users), "validation_users": len(val_users),
        "pool_weights": recommender.config.ranker_pool_weights or recommender.config.weights,
        "validation": validation,
        "settings": settings.__dict__,
        "seconds": time.perf_counter() - started,
    }
    version = versions.save(write, metadata)
    return TrainingReport(version, accepted, reason, {**metadata, "version": version}, variants)
