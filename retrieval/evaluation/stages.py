"""The learning stages, trained inside an evaluation run: zero-shot -> + fine-tuned encoder -> +
sequence encoder -> + reranker.

The models learn from the *training part* of the split only: every user's sequence without its
last two items (the validation and the test targets) and without the cold-items slice's items,
replayed into a scratch engine exactly as the service would hold it. The trainers then hold out
their own newest item per user for their accept-only-if-better rule, so neither model ever sees a
validation or test target. Each stage is then evaluated on every slice with the same protocol as
the baselines (``replay.evaluate``).

Example::

    stages = evaluate_stages(dataset, BiEncoder(), EvalConfig(), StageSettings())
    stages["table"]["all"]["zero_shot"]["ndcg@10"], stages["table"]["all"]["reranker"]["ndcg@10"]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from encoders import BiEncoder
from retrieval.evaluation.datasets import Dataset
from retrieval.evaluation.replay import (
    RERANKED,
    SEQUENCE,
    SLICES,
    EvalConfig,
    Replay,
    cold_slice_items,
    encode_catalogue,
    evaluate,
    paired_change,
)
from retrieval.pipeline.sources import LoadedSequence
from retrieval.registry import ENCODER_MODELS, RERANKER_MODELS, SEQUENCE_MODELS, RerankerVersions, SequenceVersions
from retrieval.storage.vector_store import StoredPoint
from retrieval.training.encoder import train_encoder
from retrieval.training.reranker import train_reranker
from retrieval.training.sequence import train_sequence
from retrieval.training.settings import EncoderTrainingSettings, SequenceTrainingSettings, TrainingSettings

# The reranker stage measured again with retrieval's MMR strength instead of the reranked lists' own
# default: what that default is worth, on the record beside the stage as served.
SAME_DIVERSITY = "reranker_retrieval_diversity"
# A ranker over zero-shot retrieval, trained and measured when the encoder is accepted: the pipeline
# that serves if the encoder is not switched in, compared user by user with the one that does.
RANKER_WITHOUT_ENCODER = "reranker_without_encoder"
# Zero-shot retrieval with the fusion weights chosen with the fine-tuned encoder: the encoder's own
# part of its stage, apart from the weights' (measured whenever the encoder comes with weights).
WEIGHTS_WITHOUT_ENCODER = "zero_shot_at_encoder_weights"


@dataclass
class StageSettings:
    encoder: EncoderTrainingSettings = field(default_factory=EncoderTrainingSettings)
    reranker: TrainingSettings = field(default_factory=TrainingSettings)
    sequence: SequenceTrainingSettings = field(default_factory=SequenceTrainingSettings)
    work_dir: Path | None = None  # where the trained models are kept (default: a scratch folder)


def training_part(sequences: dict[str, list[str]], leave_out: set[str] | frozenset[str] = frozenset(),
                  newest: int = 2) -> dict[str, list[str]]:
    """Every sequence without its ``newest`` items (by default its validation and test targets),
    and without the items of ``leave_out``: the cold-items slice's items, which must be as new to
    the trainers as they are to the slice (with their interactions in training the slice measures
    models that learned its items: docs/research.md, "Leaks")."""
    kept = {u: [i for i in seq[:len(seq) - newest] if i not in leave_out] for u, seq in sequences.items()}
    return {u: seq for u, seq in kept.items() if len(seq) > 1}  # one item is nothing to learn from


def stage_training_sequences(dataset: Dataset, config: EvalConfig) -> dict[str, list[str]]:
    """What a model trained for ``evaluate``'s slices may learn from: the training part of every
    sequence, without the cold-items slice's items (the stage run's trainers and the benchmarks'
    rankers alike)."""
    return training_part(dataset.sequences, leave_out=cold_slice_items(dataset, config))


def _train_and_rank(dataset: Dataset, encoder: BiEncoder, points: list[StoredPoint], config: EvalConfig,
                    versions: RerankerVersions, settings: StageSettings, slices: tuple[str, ...],
                    progress_factory: Callable[[str, int], Any] | None, label: str,
                    train_sequences: dict[str, list[str]], same_diversity: bool = True,
                    sequence: LoadedSequence | None = None,
                    offered: LoadedSequence | None = None) -> tuple[Any, dict[str, Any]]:
    """Train a ranker on the training part over this retrieval (with ``sequence`` serving, if one
    does; ``offered``: a sequence encoder the ranker may read as a feature), then evaluate it
    (rejected ones too: the service never loads those, but their effect belongs on the record)."""
    replay = Replay(dataset, encoder, train_sequences, points, config, label, sequence=sequence)
    try:
        report = train_reranker(replay.engine.recommender, versions, settings.reranker, progress_factory,
                                sequence=offered)
    finally:
        replay.close()
    if report.version is None:
        return report, {}
    loaded = versions.load(report.version, device=settings.reranker.device, allow_rejected=True)
    results = evaluate(dataset, encoder, replace(config, methods=(RERANKED,)), points=points, slices=slices,
                       reranker=loaded, sequence=sequence)
    if same_diversity and config.recommend.reranked_diversity != config.recommend.diversity:
        same = replace(config, methods=(RERANKED,),
                       recommend=replace(config.recommend, reranked_diversity=config.recommend.diversity))
        other = evaluate(dataset, encoder, same, points=points, slices=slices, reranker=loaded, sequence=sequence)
        for s in other["slices"]:
            results["slices"][s][SAME_DIVERSITY] = other["slices"][s][RERANKED]
            results["ranks"][s][SAME_DIVERSITY] = other["ranks"][s][RERANKED]
    return report, results


def evaluate_stages(dataset: Dataset, encoder: BiEncoder, config: EvalConfig | None = None,
                    settings: StageSettings | None = None, points: list[StoredPoint] | None = None,
                    zero_shot: dict[str, Any] | None = None,
                    progress_factory: Callable[[str, int], Any] | None = None,
                    slices: tuple[str, ...] = SLICES) -> dict[str, Any]:
    """Train both models on the training part and evaluate the stages.

    ``zero_shot`` may pass an evaluation already run with ``encoder`` and ``config`` (its
    ``hybrid_retrieval`` rows and per-user ranks are the first stage); ``points`` the catalogue
    encoded with ``encoder``. Every stage carries ``change``: its NDCG@10 minus the stage it builds
    on, user by user, with the standard error of that difference. When the encoder is accepted, a
    ranker is also trained over zero-shot retrieval (``RANKER_WITHOUT_ENCODER``), so whether the
    encoder pays for itself once a ranker serves is measured in the same run; zero-shot retrieval
    with the fusion weights chosen with the encoder
    (``WEIGHTS_WITHOUT_ENCODER``) tells the encoder's part from the weights'.
    Returns ``{"table": {slice: {stage: metrics}}, "accepted": {stage: bool}, "encoder_training",
    "reranker_training", "seconds"}``.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    settings = settings or StageSettings()
    ranker_reads_sequence = settings.reranker.sequence != "off" or "sequence" in config.recommend.sources
    if ranker_reads_sequence and settings.sequence.left_out < settings.reranker.sequence_left_out:
        # Said before hours of training rather than after (``train_reranker`` refuses it too): the
        # ranker stage reads the sequence stage's encoder, as a source where it is accepted.
        raise ValueError(f"train_sequence.left_out={settings.sequence.left_out}: the ranker stage needs >= "
                         f"{settings.reranker.sequence_left_out} (HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT): it must not "
                         "read a sequence encoder, as a feature or as a source, trained on the steps it trains on")
    work = Path(settings.work_dir or tempfile.mkdtemp(prefix="hybridrec-eval-stages-"))
    points = points if points is not None else encode_catalogue(dataset, encoder)
    retrieval_only = replace(config, methods=("hybrid_retrieval",))
    if zero_shot is None or any("hybrid_retrieval" not in zero_shot["slices"].get(s, {})
                                or "hybrid_retrieval" not in zero_shot.get("ranks", {}).get(s, {}) for s in slices):
        zero_shot = evaluate(dataset, encoder, retrieval_only, points=points, slices=slices)
    train_sequences = stage_training_sequences(dataset, config)

    # Stage 2: the bi-encoder, contrastive on (item -> next item) of the training part.
    replay = Replay(dataset, encoder, train_sequences, points, config, "train")
    try:
        encoder_meta = train_encoder(replay.engine, work / ENCODER_MODELS, settings.encoder, progress_factory)
    finally:
        replay.close()
    tuned = BiEncoder(encoder_meta["path"], device=encoder.device)
    tuned_points = encode_catalogue(dataset, tuned)
    # The encoder serves with the fusion weights chosen with it (as ``hybridrec reindex`` gives it).
    tuned_config = replace(config, recommend=config.recommend.with_weights(encoder_meta.get("fusion_weights")))
    # The stage is measured whatever the accept rule said, so a rejected model's effect is on record.
    tuned_results = evaluate(dataset, tuned, replace(tuned_config, methods=("hybrid_retrieval",)),
                             points=tuned_points, slices=slices)
    reweighted = None
    if encoder_meta.get("fusion_weights"):
        reweighted = evaluate(dataset, encoder, replace(tuned_config, methods=("hybrid_retrieval",)),
                              points=points, slices=slices)
    accepted = encoder_meta["accepted"]
    serving_encoder, serving_points, serving_config = (
        (tuned, tuned_points, tuned_config) if accepted else (encoder, points, config))

    # Stage 3: the sequence encoder, over the item vectors that will serve.
    replay = Replay(dataset, serving_encoder, train_sequences, serving_points, serving_config, "train-sequence")
    try:
        sequence_meta = train_sequence(replay.engine, SequenceVersions(work / SEQUENCE_MODELS), settings.sequence,
                                       progress_factory)
        space = replay.engine.item_space()
    finally:
        replay.close()
    candidate = SequenceVersions(work / SEQUENCE_MODELS).load(sequence_meta["version"], space,
                                                              device=settings.sequence.device, allow_rejected=True)
    sequence_results = evaluate(dataset, serving_encoder,
                                replace(serving_config, methods=("hybrid_retrieval", SEQUENCE)),
                                points=serving_points, slices=slices, sequence=candidate)
    sequence_accepted = sequence_meta["accepted"]
    serving_sequence = candidate if sequence_accepted else None
    before_ranker = "sequence_encoder" if sequence_accepted else ("fine_tuned_encoder" if accepted else "zero_shot")

    # Stage 4: the learned ranker (+ cross-encoder where it is trained), on the retrieval that will
    # serve; it may read the sequence encoder as a feature even where that was refused as a source.
    report, reranked = _train_and_rank(dataset, serving_encoder, serving_points, serving_config,
                                       RerankerVersions(work / RERANKER_MODELS), settings, slices, progress_factory,
                                       "train-reranker", train_sequences, sequence=serving_sequence,
                                       offered=candidate)
    without = None
    if accepted:
        without_report, without = _train_and_rank(dataset, encoder, points, config,
                                                   RerankerVersions(work / "reranker_without_encoder"), settings,
                                                   slices, progress_factory, "train-reranker-zero-shot",
                                                   train_sequences, same_diversity=False)

    # (stage, its results, its method, the stage it builds on, whether its model was accepted)
    stages = [("zero_shot", zero_shot, "hybrid_retrieval", None, True),
              ("fine_tuned_encoder", tuned_results, "hybrid_retrieval", "zero_shot", accepted)]
    if reweighted:
        stages += [(WEIGHTS_WITHOUT_ENCODER, reweighted, "hybrid_retrieval", "fine_tuned_encoder", True)]
    # The sequence encoder is measured against the retrieval it joins (the encoder stage when that
    # is accepted), and its source alone against the same, so fusion's gain over it is on record.
    sequence_base = "fine_tuned_encoder" if accepted else "zero_shot"
    stages += [("sequence_encoder", sequence_results, "hybrid_retrieval", sequence_base, sequence_accepted),
               ("sequence_encoder_alone", sequence_results, SEQUENCE, "sequence_encoder", sequence_accepted)]
    if reranked:
        stages += [("reranker", reranked, RERANKED, before_ranker, report.accepted)]
        if SAME_DIVERSITY in reranked["slices"][slices[0]]:
            stages += [(SAME_DIVERSITY, reranked, SAME_DIVERSITY, "reranker", report.accepted)]
    if without:
        stages += [(RANKER_WITHOUT_ENCODER, without, RERANKED, "reranker", without_report.accepted)]
    measured = {stage: (results, method) for stage, results, method, _, _ in stages}
    table: dict[str, dict[str, Any]] = {}
    for s in slices:
        table[s] = {}
        for stage, results, method, base, _ in stages:
            row = dict(results["slices"][s][method])
            if base is not None:
                base_results, base_method = measured[base]
                row["change"] = {"vs": base, **paired_change(results["ranks"][s][method],
                                                             base_results["ranks"][s][base_method])}
            table[s][stage] = row
    out = {
        "table": table,
        "accepted": {stage: ok for stage, _, _, _, ok in stages},
        "training_users": len(train_sequences),
        "cold_items_left_out_of_training": len(cold_slice_items(dataset, config)),
        "encoder_training": {k: v for k, v in encoder_meta.items() if k != "path"},
        "sequence_training": {**{k: v for k, v in sequence_meta.items() if k not in ("path", "settings")},
                              "left_out": settings.sequence.left_out},
        "reranker_training": _ranker_summary(report),
        "diversity": {"retrieval": config.recommend.diversity, "reranked": config.recommend.reranked_diversity},
        "serving": {"encoder": "fine-tuned" if accepted else "zero-shot",
                    "sequence_encoder": "accepted" if sequence_accepted else "none (rejected)",
                    "weights": serving_config.recommend.weights,
                    "reranker": "accepted" if report.accepted else "none (rejected)"},
        "seconds": time.perf_counter() - started,
    }
    if without is not None:
        out["reranker_without_encoder_training"] = _ranker_summary(without_report)
    return out


def _ranker_summary(report) -> dict[str, Any]:
    return {"version": report.version, "accepted": report.accepted, "reason": report.reason,
            **{k: v for k, v in report.metadata.items() if k in (
                "ranker", "cross_encoder", "sequence", "validation", "train_users", "validation_users", "seconds",
                "settings")}}
