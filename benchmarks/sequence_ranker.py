"""The sequence encoder as a feature of the learned ranker, against the ranker without it, in the
same run: quality on every slice of the evaluation, and request latency.

The sequence encoder has been refused as a candidate source on the shared dataset (it ranks the
regions of items people took above new ones). A ranker can read it differently: its similarity
between the history and each candidate is one more column, the trees learn how far to trust it,
and items nobody has taken keep the place retrieval gave them. This measures that:

1. Train the sequence encoder on the evaluation's training part (``stage_training_sequences``), as
   ``hybridrec evaluate --stages`` does, without each user's 3 newest items (the ranker's training
   steps and its validation item); its verdict as a source does not matter here.
2. Train the ranker over zero-shot retrieval twice on the same lists: without the sequence encoder,
   and reading it (``train_reranker(sequence=...)`` with ``TrainingSettings.sequence="only"``, so
   the variant is kept for measuring it; as served, the trainer keeps it only where it is clearly
   better than the ranker without it, and the validation comparison is printed). Both trained
   models are evaluated on test, accepted or not, on every slice, paired user by user.
3. Latency: the same history requests through ``Recommender.recommend`` with each ranker serving,
   alternated request by request so both see the same machine load.

    python benchmarks/sequence_ranker.py [--max-users 1000] [--seed 42] [--lists 3000] [--requests 300]
        [--left-out 3] [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, alternated_latency, save, table  # noqa: E402
from encoders import BiEncoder  # noqa: E402
from retrieval.evaluation.datasets import load_dataset  # noqa: E402
from retrieval.evaluation.replay import (  # noqa: E402
    RERANKED,
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
from retrieval.registry import RerankerVersions, SequenceVersions  # noqa: E402
from retrieval.training.reranker import train_reranker  # noqa: E402
from retrieval.training.sequence import train_sequence  # noqa: E402
from retrieval.training.settings import SequenceTrainingSettings, TrainingSettings  # noqa: E402


def compared_on_slices(results: dict[str, dict], base_arm: str, new_arm: str, split: str,
                       seed: int) -> tuple[dict[str, Any], str]:
    """Two rankers' ``evaluate`` results on every slice, paired user by user: the rows saved, and
    the table printed."""
    rows, slices = [], {}
    for s in SLICES:
        retrieval = results[base_arm]["slices"][s]["hybrid_retrieval"]
        base, new = results[base_arm]["slices"][s][RERANKED], results[new_arm]["slices"][s][RERANKED]
        if not base.get("users"):
            continue
        change = paired_change(results[new_arm]["ranks"][s][RERANKED], results[base_arm]["ranks"][s][RERANKED])
        slices[s] = {"users": base["users"], "retrieval": retrieval, "without": base, "with": new, "change": change}
        rows.append([s, base["users"], round(retrieval["ndcg@10"], 4), round(base["ndcg@10"], 4),
                     round(new["ndcg@10"], 4), f"{change['ndcg@10']:+.4f} ± {change['standard_error']:.4f}",
                     f"{new['ndcg@10'] / base['ndcg@10']:.3f}x" if base["ndcg@10"] else "-",
                     round(base["coverage@10"], 3), round(new["coverage@10"], 3)])
    return slices, table(
        ["slice", "users", "retrieval (zero-shot)", base_arm, new_arm, "paired change", "ratio",
         f"coverage@10 {base_arm}", f"coverage@10 {new_arm}"], rows,
        title=f"NDCG@10, {split}, {results[base_arm]['config']['evaluated_users']} users, seed {seed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--max-users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", default="test", choices=["test", "valid"])
    parser.add_argument("--lists", type=int, default=3000, help="ranking lists each ranker learns from")
    parser.add_argument("--epochs", type=int, default=SequenceTrainingSettings.epochs)
    parser.add_argument("--left-out", type=int, default=TrainingSettings().sequence_left_out,
                        help="each user's newest items the sequence encoder does not train on (at least the "
                             "ranker's training steps and the newest: the trainer refuses fewer)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="sequence_ranker", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args(argv)
    if not args.dataset.exists():
        print(f"skipping: {args.dataset} is not here")
        return 0
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    encoder = BiEncoder(device=args.device)
    points = encode_catalogue(dataset, encoder)
    config = EvalConfig(seed=args.seed, split=args.split, max_users=args.max_users)
    work = Path(tempfile.mkdtemp(prefix="hybridrec-bench-sequence-ranker-"))
    progress = lambda d, n: tqdm(total=n, desc=d, mininterval=5)  # noqa: E731

    train = stage_training_sequences(dataset, config)
    replay = Replay(dataset, encoder, train, points, config, "train-sequence")
    try:
        sequence_meta = train_sequence(replay.engine, SequenceVersions(work / "sequence"),
                                       SequenceTrainingSettings(epochs=args.epochs, device=args.device, seed=args.seed,
                                                                left_out=args.left_out),
                                       progress_factory=progress)
        space = replay.engine.item_space()
    finally:
        replay.close()
    offered = SequenceVersions(work / "sequence").load(sequence_meta["version"], space, device=args.device,
                                                       allow_rejected=True)

    settings = TrainingSettings(max_lists=args.lists, cross_encoder="off", device=args.device, seed=args.seed)
    reports, rankers = {}, {}
    for arm, sequence in (("ranker", None), ("ranker reading the sequence encoder", offered)):
        versions = RerankerVersions(work / arm.replace(" ", "_"))
        replay = Replay(dataset, encoder, train, points, config, f"train-{arm}")
        try:
            reports[arm] = train_reranker(replay.engine.recommender, versions,
                                          replace(settings, sequence="only") if sequence else settings, progress,
                                          sequence=sequence)
        finally:
            replay.close()
        rankers[arm] = versions.load(reports[arm].version, device=args.device, allow_rejected=True)

    results = {arm: evaluate(dataset, encoder, replace(config, methods=("hybrid_retrieval", RERANKED)), points=points,
                             reranker=loaded) for arm, loaded in rankers.items()}
    base_arm, new_arm = list(rankers)
    slices, comparison = compared_on_slices(results, base_arm, new_arm, args.split, args.seed)
    print(comparison)

    replay = Replay(dataset, encoder, {u: c.history for u, c in leave_one_out(dataset.sequences, args.split).items()},
                    points, config, "latency")
    recommender = replay.engine.recommender
    try:
        timing = alternated_latency(lambda user: recommender.recommend(RecommendRequest(user_id=user, k=10)),
                                    {arm: partial(setattr, recommender, "reranker", loaded)
                                     for arm, loaded in rankers.items()},
                                    sorted(replay.engine.index.user_ids()), args.requests, args.seed)
    finally:
        replay.close()
    print()
    print(table(["ranker serving", "requests", "p50 ms", "p99 ms", "p50 ratio"],
                [[arm, t["requests"], round(t["p50_ms"], 2), round(t["p99_ms"], 2),
                  f"{t['p50_ms'] / timing[base_arm]['p50_ms']:.2f}x"] for arm, t in timing.items()],
                title="Recommend latency, history requests (k=10), alternated in one run"))

    offered_meta = reports[new_arm].metadata.get("sequence") or {}
    print(f"\nsequence encoder: {len(sequence_meta['epochs'])} epochs, {sequence_meta['train_seconds']:.0f} s on "
          f"{sequence_meta['device']}; as a source {'accepted' if sequence_meta['accepted'] else 'REJECTED'}: "
          f"{sequence_meta['reason']}")
    for name, v in (offered_meta.get("variants") or {}).items():
        print(f"validation: {name} {v['ndcg@10']:.4f} against {v['against']} {v['without']:.4f} "
              f"({v['gain']:+.4f} ± {v['standard_error']:.4f}){'' if v['competes'] else ': not clearly better'}")
    for arm, report in reports.items():
        print(f"{arm}: {report.metadata['ranker']['variant']} "
              f"{'accepted' if report.accepted else 'REJECTED'}: {report.reason}")
    print(f"whole run {time.perf_counter() - started:.0f} s")
    path = save(args.name, {
        "config": {**vars(args), "dataset": str(args.dataset)},
        "sequence_training": {k: v for k, v in sequence_meta.items() if k not in ("path", "settings")},
        "rankers": {arm: {"version": r.version, "accepted": r.accepted, "reason": r.reason,
                          "ranker": r.metadata.get("ranker"), "sequence": r.metadata.get("sequence"),
                          "validation": r.metadata.get("validation"), "seconds": r.metadata.get("seconds")}
                    for arm, r in reports.items()},
        "slices": slices, "latency": timing, "seconds": time.perf_counter() - started,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
