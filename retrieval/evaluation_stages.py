"""The learning stages, trained inside an evaluation run: zero-shot -> + fine-tuned encoder -> + reranker.

Both models learn from the *training part* of the split only: every user's sequence without its
last two items (the validation and the test targets), replayed into a scratch engine exactly as the
service would hold it. The trainers then hold out their own newest item per user for their
accept-only-if-better rule, so neither model ever sees a validation or test target. Each stage is
then evaluated on every slice with the same protocol as the baselines (``evaluation.evaluate``).

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
from retrieval.datasets import Dataset
from retrieval.encoder_training import EncoderTrainingSettings, train_encoder
from retrieval.evaluation import RERANKED, SLICES, EvalConfig, Replay, encode_catalogue, evaluate
from retrieval.reranker_training import RerankerVersions, TrainingSettings, train_reranker
from retrieval.store import StoredPoint

STAGE_NAMES = ("zero_shot", "fine_tuned_encoder", "reranker")
# The reranker stage measured again with retrieval's MMR strength instead of the reranked lists' own
# default: what that default is worth, on the record beside the stage as served.
SAME_DIVERSITY = "reranker_retrieval_diversity"


@dataclass
class StageSettings:
    encoder: EncoderTrainingSettings = field(default_factory=EncoderTrainingSettings)
    reranker: TrainingSettings = field(default_factory=TrainingSettings)
    work_dir: Path | None = None  # where the trained models are kept (default: a scratch folder)


def training_part(sequences: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every sequence without its validation and test targets (its last two items)."""
    return {u: seq[:-2] for u, seq in sequences.items() if len(seq) > 3}


def evaluate_stages(dataset: Dataset, encoder: BiEncoder, config: EvalConfig | None = None,
                    settings: StageSettings | None = None, points: list[StoredPoint] | None = None,
                    zero_shot: dict[str, Any] | None = None,
                    progress_factory: Callable[[str, int], Any] | None = None,
                    slices: tuple[str, ...] = SLICES) -> dict[str, Any]:
    """Train both models on the training part and evaluate the three stages.

    ``zero_shot`` may pass the ``slices`` of an evaluation already run with ``encoder`` (its
    ``hybrid_retrieval`` rows are the first stage); ``points`` the catalogue encoded with ``encoder``.
    Returns ``{"table": {slice: {stage: metrics}}, "encoder_training", "reranker_training", "seconds"}``.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    settings = settings or StageSettings()
    work = Path(settings.work_dir or tempfile.mkdtemp(prefix="hybridrec-eval-stages-"))
    points = points if points is not None else encode_catalogue(dataset, encoder)
    retrieval_only = replace(config, methods=("hybrid_retrieval",))
    if zero_shot is None or any("hybrid_retrieval" not in zero_shot.get(s, {}) for s in slices):
        zero_shot = evaluate(dataset, encoder, retrieval_only, points=points, slices=slices)["slices"]
    train_sequences = training_part(dataset.sequences)

    # Stage 2: the bi-encoder, contrastive on (item -> next item) of the training part.
    replay = Replay(dataset, encoder, train_sequences, points, config, "train")
    try:
        encoder_meta = train_encoder(replay.engine, work / "encoder", settings.encoder, progress_factory)
    finally:
        replay.close()
    tuned = BiEncoder(encoder_meta["path"], device=encoder.device)
    tuned_points = encode_catalogue(dataset, tuned)
    # The encoder serves with the fusion weights chosen with it (as ``hybridrec reindex`` gives it).
    tuned_config = replace(config, recommend=replace(
        config.recommend, weights={**config.recommend.weights, **(encoder_meta.get("fusion_weights") or {})}))
    # The stage is measured whatever the accept rule said, so a rejected model's effect is on record.
    tuned_results = evaluate(dataset, tuned, replace(tuned_config, methods=("hybrid_retrieval",)),
                             points=tuned_points, slices=slices)["slices"]
    serving_encoder, serving_points = (tuned, tuned_points) if encoder_meta["accepted"] else (encoder, points)
    if encoder_meta["accepted"]:
        config = tuned_config

    # Stage 3: the learned ranker (+ cross-encoder where it is trained), on the retrieval that will serve.
    replay = Replay(dataset, serving_encoder, train_sequences, serving_points, config, "train-reranker")
    versions = RerankerVersions(work / "reranker")
    try:
        report = train_reranker(replay.engine.recommender, versions, settings.reranker, progress_factory)
    finally:
        replay.close()
    reranked_results: dict[str, Any] = {}
    if report.version is not None:
        # A rejected model is measured too (the service itself never loads one).
        loaded = versions.load(report.version, device=settings.reranker.device, allow_rejected=True)
        reranked_results = evaluate(dataset, serving_encoder, replace(config, methods=(RERANKED,)),
                                    points=serving_points, slices=slices, reranker=loaded)["slices"]
        if config.recommend.reranked_diversity != config.recommend.diversity:
            same = replace(config, methods=(RERANKED,),
                           recommend=replace(config.recommend, reranked_diversity=config.recommend.diversity))
            same_diversity = evaluate(dataset, serving_encoder, same, points=serving_points, slices=slices,
                                      reranker=loaded)["slices"]
            for s in same_diversity:
                reranked_results[s][SAME_DIVERSITY] = same_diversity[s][RERANKED]

    table: dict[str, dict[str, Any]] = {}
    for s in zero_shot:
        if s not in slices:
            continue
        table[s] = {"zero_shot": zero_shot[s]["hybrid_retrieval"],
                    "fine_tuned_encoder": tuned_results[s]["hybrid_retrieval"]}
        if reranked_results:
            table[s]["reranker"] = reranked_results[s][RERANKED]
            if SAME_DIVERSITY in reranked_results[s]:
                table[s][SAME_DIVERSITY] = reranked_results[s][SAME_DIVERSITY]
    return {
        "table": table,
        "training_users": len(train_sequences),
        "encoder_training": {k: v for k, v in encoder_meta.items() if k != "path"},
        "reranker_training": {"version": report.version, "accepted": report.accepted, "reason": report.reason,
                              **{k: v for k, v in report.metadata.items() if k in (
                                  "ranker", "cross_encoder", "validation", "train_users", "validation_users",
                                  "seconds", "settings")}},
        "diversity": {"retrieval": config.recommend.diversity, "reranked": config.recommend.reranked_diversity},
        "serving": {"encoder": "fine-tuned" if encoder_meta["accepted"] else "zero-shot",
                    "weights": config.recommend.weights,
                    "reranker": "accepted" if report.accepted else "none (rejected)"},
        "seconds": time.perf_counter() - started,
    }
