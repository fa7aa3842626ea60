"""The sequence encoder (``encoders/sequence.py``) against the pipeline as it serves without it, in
the same run: quality on every slice of the evaluation, training time, and request latency.

1. Train it on the evaluation's training part (``stage_training_sequences``: every sequence without
   its validation and test targets and without the cold-items slice's items), as ``hybridrec
   evaluate --stages`` does, with its accept rule and chosen fusion weight.
2. Evaluate zero-shot hybrid retrieval without it and with it serving (accepted or not: its effect
   is on record), and its source alone, on every slice, paired user by user.
3. Latency: the same history requests (known users) through ``Recommender.recommend`` with and
   without the sequence source, alternated request by request so both see the same machine load.

    python benchmarks/sequence_encoder.py [--max-users 1000] [--seed 42] [--split test] [--requests 300]
        [--popularity-correction 1.0] [--drop-residual 0.3] [--left-out 3] [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, alternated_latency, save, table  # noqa: E402
from encoders import BiEncoder  # noqa: E402
from retrieval.evaluation.datasets import load_dataset  # noqa: E402
from retrieval.evaluation.replay import (  # noqa: E402
    SEQUENCE,
    SLICES,
    EvalConfig,
    Replay,
    encode_catalogue,
    evaluate,
    leave_one_out,
    paired_change,
)
from retrieval.evaluation.stages import stage_training_sequences  # noqa: E402
from retrieval.pipeline.request import RecommendRequest  # noqa: E402
from retrieval.registry import SequenceVersions  # noqa: E402
from retrieval.training.sequence import train_sequence  # noqa: E402
from retrieval.training.settings import SequenceTrainingSettings  # noqa: E402

BASELINES = ("popularity", "itemknn", "bm25", "zero_shot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--max-users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--epochs", type=int, default=SequenceTrainingSettings.epochs)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--popularity-correction", type=float, default=SequenceTrainingSettings.popularity_correction)
    parser.add_argument("--drop-residual", type=float, default=SequenceTrainingSettings.drop_residual,
                        help="share of learned item residuals hidden in training (1: items read by text alone)")
    parser.add_argument("--left-out", type=int, default=SequenceTrainingSettings.left_out,
                        help="each user's newest items not trained on (train_sequence.left_out)")
    parser.add_argument("--name", default="sequence_encoder", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv)
    if not args.dataset.exists():
        print(f"skipping: {args.dataset} is not here")
        return 0
    dataset = load_dataset(args.dataset)
    encoder = BiEncoder(device=args.device)
    points = encode_catalogue(dataset, encoder)
    config = EvalConfig(seed=args.seed, split=args.split, max_users=args.max_users)
    settings = SequenceTrainingSettings(epochs=args.epochs, device=args.device, seed=args.seed,
                                        popularity_correction=args.popularity_correction,
                                        drop_residual=args.drop_residual, left_out=args.left_out)

    train = stage_training_sequences(dataset, config)
    replay = Replay(dataset, encoder, train, points, config, "train-sequence")
    versions = SequenceVersions(Path(tempfile.mkdtemp(prefix="hybridrec-bench-sequence-")))
    try:
        meta = train_sequence(replay.engine, versions, settings,
                              progress_factory=lambda d, n: tqdm(total=n, desc=d, mininterval=5))
        space = replay.engine.item_space()
    finally:
        replay.close()
    loaded = versions.load(meta["version"], space, device=args.device, allow_rejected=True)

    results = evaluate(dataset, encoder, replace(config, methods=(*BASELINES, "hybrid_retrieval")), points=points)
    with_sequence = evaluate(dataset, encoder, replace(config, methods=("hybrid_retrieval", SEQUENCE)),
                             points=points, sequence=loaded)

    rows, slices = [], {}
    for s in SLICES:
        base = results["slices"][s]["hybrid_retrieval"]
        new = with_sequence["slices"][s]["hybrid_retrieval"]
        alone = with_sequence["slices"][s][SEQUENCE]
        change = paired_change(with_sequence["ranks"][s]["hybrid_retrieval"], results["ranks"][s]["hybrid_retrieval"])
        over_alone = paired_change(with_sequence["ranks"][s]["hybrid_retrieval"], with_sequence["ranks"][s][SEQUENCE])
        best_baseline = max(BASELINES, key=lambda m: results["slices"][s][m]["ndcg@10"])
        slices[s] = {"users": base["users"], "baselines": {m: results["slices"][s][m] for m in BASELINES},
                     "without": base, "with": new, "sequence_alone": alone, "change": change,
                     "change_over_sequence_alone": over_alone}
        rows.append([s, base["users"], round(results["slices"][s][best_baseline]["ndcg@10"], 4), best_baseline,
                     round(alone["ndcg@10"], 4), round(base["ndcg@10"], 4), round(new["ndcg@10"], 4),
                     f"{change['ndcg@10']:+.4f} ± {change['standard_error']:.4f}",
                     f"{new['ndcg@10'] / base['ndcg@10']:.3f}x" if base["ndcg@10"] else "-",
                     round(base["coverage@10"], 3), round(new["coverage@10"], 3)])
    print(table(["slice", "users", "best baseline", "which", "sequence alone", "without (baseline)", "with",
                 "paired change", "ratio", "coverage@10 without", "with"], rows,
                title=f"NDCG@10, {args.split}, {results['config']['evaluated_users']} users, seed {args.seed}"))

    replay = Replay(dataset, encoder, {u: c.history for u, c in leave_one_out(dataset.sequences, args.split).items()},
                    points, config, "latency")
    recommender = replay.engine.recommender
    source = recommender.sources["sequence"]
    try:
        timing = alternated_latency(lambda user: recommender.recommend(RecommendRequest(user_id=user, k=10)),
                                    {"without": partial(setattr, source, "loaded", None),
                                     "with": partial(setattr, source, "loaded", loaded)},
                                    sorted(replay.engine.index.user_ids()), args.requests, args.seed)
    finally:
        replay.close()
    print()
    print(table(["pipeline", "requests", "p50 ms", "p99 ms", "p50 ratio"],
                [[arm, t["requests"], round(t["p50_ms"], 2), round(t["p99_ms"], 2),
                  f"{t['p50_ms'] / timing['without']['p50_ms']:.2f}x"] for arm, t in timing.items()],
                title="Recommend latency, history requests (k=10), alternated in one run"))
    epochs = meta["epochs"]
    print(f"\ntraining: {meta['windows']} windows, {len(epochs)} epochs, {meta['train_seconds']:.0f} s on "
          f"{meta['device']} ({meta['train_seconds'] / max(len(epochs), 1):.1f} s per epoch); whole trainer "
          f"with validation {meta['seconds']:.0f} s; {'accepted' if meta['accepted'] else 'REJECTED'}: {meta['reason']}")
    path = save(args.name, {
        "config": {**vars(args), "dataset": str(args.dataset), "settings": asdict(settings)},
        "training": {k: v for k, v in meta.items() if k not in ("path", "settings")},
        "slices": slices, "latency": timing,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
