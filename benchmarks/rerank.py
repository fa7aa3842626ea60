"""The reranker on the shared dataset: training time, its validation verdict against the retrieval
order, and rerank latency for 20/50/100/200 candidates (ratio to retrieval alone, same run).

The event log is the test split's training part (every user's items but the last), replayed
through the real event path; the trainer itself holds out each user's newest logged item and
judges ``--validation-users`` users on it (1,000 here to keep a timing benchmark short; the
trainer's own default, and the stage run's, is 5,000).

    python benchmarks/rerank.py [--max-lists 6000] [--cross-encoder auto|on|off] [--device auto]
                                [--cross-encoder-epoch-groups 200] [--latency-devices cpu cuda]

Training: the learned ranker (list building + fitting), and one cross-encoder epoch on
``--cross-encoder-epoch-groups`` groups (pairs/s, and what a 3,000-group epoch takes at that rate).
Latency, one request at a time: the whole request with the ranker reordering the top N, the
ranker stage alone (features + trees), and the cross-encoder scoring N pairs on each of
``--latency-devices`` (the same model on each, so a CUDA / CPU ratio comes from one run).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, percentile, replay_shared_dataset, save, table  # noqa: E402
from encoders.cross_encoder import CrossEncoderReranker  # noqa: E402
from encoders.device import resolve_device  # noqa: E402
from encoders.training import train_listwise  # noqa: E402
from retrieval.evaluation.replay import Replay  # noqa: E402
from retrieval.pipeline.recommender import Recommender  # noqa: E402
from retrieval.pipeline.request import RecommendRequest  # noqa: E402
from retrieval.ranking.features import rank_candidates  # noqa: E402
from retrieval.ranking.rerank import rank_inputs, rerank  # noqa: E402
from retrieval.training.protocol import log_sequences, next_item_cases  # noqa: E402
from retrieval.training.reranker import build_groups, train_reranker  # noqa: E402
from retrieval.training.settings import TrainingSettings  # noqa: E402

SIZES = (20, 50, 100, 200)


def timed(fn, runs):
    samples = []
    for arg in runs:
        started = time.perf_counter()
        fn(arg)
        samples.append((time.perf_counter() - started) * 1000)
    return percentile(samples, 50), percentile(samples, 99)


def cross_encoder_epoch(replay: Replay, groups: int, device: str, seed: int = 0) -> dict:
    """One cross-encoder epoch on ``groups`` groups built like the trainer builds them."""
    recommender = replay.engine.recommender
    sequences = log_sequences(recommender.profiles.log, recommender.profiles.index)
    rng = random.Random(seed)
    cases = next_item_cases(sequences, sorted(sequences), 2)
    rng.shuffle(cases)
    all_ids = sorted({i for s in sequences.values() for i in s})
    built = build_groups(recommender, cases[:groups], TrainingSettings(), rng, all_ids)
    model = CrossEncoderReranker(device=device)
    with tqdm(total=len(built), desc=f"cross-encoder epoch ({model.device})", mininterval=2) as bar:
        epoch = train_listwise(model, built, epochs=1, seed=seed, on_batch=bar.update)[0]
    return {"device": model.device, "groups": len(built), "pairs": epoch.pairs, "seconds": epoch.seconds,
            "pairs_per_s": epoch.pairs / epoch.seconds,
            "seconds_per_3000_groups": epoch.seconds * 3000 / max(1, len(built))}


def latency(replay: Replay, loaded, users: list[str], devices: list[str]) -> list[list]:
    engine = replay.engine
    base = engine.recommender
    p50, p99 = timed(lambda u: base.recommend(RecommendRequest(user_id=u, k=10, rerank=False)), users)
    rows = [["retrieval only, k=10 (baseline)", 0, p50, p99, 1.0]]
    models = [CrossEncoderReranker(device=device).for_inference() for device in devices]
    for model in models:
        model.score(["warm up"] * 8, ["warm up"] * 8)  # CUDA context and kernels before the clock
    for n in SIZES:
        served = Recommender(engine.catalogue, engine.profiles, engine.index, replace(base.config, rerank_candidates=n))
        served.reranker = loaded
        q50, q99 = timed(lambda u: served.recommend(RecommendRequest(user_id=u, k=10)), users)
        rows.append([f"request with ranker over top {n}", n, q50, q99, q50 / p50])
    for n in SIZES:
        lists = {}
        for u in users:
            items = base.recommend(RecommendRequest(user_id=u, k=min(n, 100), rerank=False, diversity=0)).items
            lists[u] = rank_candidates((items * (n // max(1, len(items)) + 1))[:n])

        def stage(u):
            rerank(loaded, rank_inputs(engine.catalogue, engine.index, engine.index.history(u), lists[u]))

        q50, q99 = timed(stage, users)
        rows.append([f"ranker stage alone, {n} candidates", n, q50, q99, q50 / p50])
        inputs = {u: rank_inputs(engine.catalogue, engine.index, engine.index.history(u), lists[u]) for u in users}
        for model in models:
            q50, q99 = timed(lambda u: model.score([inputs[u].context] * n, inputs[u].documents), users)
            rows.append([f"cross-encoder, {n} pairs ({model.device})", n, q50, q99, q50 / p50])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-lists", type=int, default=6000)
    parser.add_argument("--cross-encoder", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--max-groups", type=int, default=3000, help="cross-encoder groups when it is trained")
    parser.add_argument("--cross-encoder-epoch-groups", type=int, default=200,
                        help="time one cross-encoder epoch on this many groups (0: skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--validation-users", type=int, default=1000,
                        help="users judged on their newest item (the trainer's default: 5000)")
    parser.add_argument("--latency-users", type=int, default=20)
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--latency-devices", nargs="+", help="time the cross-encoder on each (default: --device)")
    args = parser.parse_args()
    loaded = replay_shared_dataset(args.dataset, "test", "rerank")
    if loaded is None:
        return
    _, _, _, cases, replay = loaded
    settings = TrainingSettings(max_lists=args.max_lists, cross_encoder=args.cross_encoder, max_groups=args.max_groups,
                                device=args.device, max_validation_users=args.validation_users)
    started = time.perf_counter()
    report = train_reranker(replay.engine.recommender, replay.engine.rerankers, settings,
                            progress_factory=lambda desc, total: tqdm(total=total, desc=desc, mininterval=2))
    meta = report.metadata
    print(f"\n{report.version}: {'accepted' if report.accepted else 'rejected'}: {report.reason}")
    ranker = meta["ranker"]
    training = [["learned ranker: lists + fit", ranker["lists"], ranker["rows"], meta["seconds"]]]
    ce = meta["cross_encoder"]
    for e in ce.get("epochs", []):
        training.append([f"cross-encoder epoch {e['epoch']} ({resolve_device(args.device)})", ce["groups"],
                         e["pairs"], e["seconds"]])
    epoch = None
    if args.cross_encoder_epoch_groups:
        epoch = cross_encoder_epoch(replay, args.cross_encoder_epoch_groups, args.device)
        training.append([f"cross-encoder epoch, {epoch['groups']} groups ({epoch['device']}; "
                         f"3000 groups: {epoch['seconds_per_3000_groups']:.0f} s)", epoch["groups"], epoch["pairs"],
                         epoch["seconds"]])
    print(table(["training", "lists / groups", "rows / pairs", "seconds"], training,
                title=f"Training on the shared dataset (total {time.perf_counter() - started:.0f} s)"))
    print(table(["order", "users", "NDCG@10", "Recall@10", "coverage@10", "gini@10"],
                [[k, v["users"], v["ndcg@10"], v["recall@10"], v["coverage@10"], v["gini@10"]]
                 for k, v in meta["validation"].items()], title="Validation (each judged user's newest item)"))
    served = replay.engine.rerankers.load(report.version, device=args.device, allow_rejected=True)
    users = sorted(cases)[: args.latency_users]
    rows = latency(replay, served, users, args.latency_devices or [args.device])
    print(table(["request", "candidates", "p50 ms", "p99 ms", "p50 / retrieval p50"], rows,
                title="Rerank latency (one request at a time)"))
    replay.close()
    path = save(f"rerank_{resolve_device(settings.device).split(':')[0]}", {
        "version": report.version, "accepted": report.accepted, "reason": report.reason,
        "training_seconds": meta["seconds"], "ranker": ranker, "cross_encoder": ce, "cross_encoder_epoch": epoch,
        "validation": meta["validation"],
        "latency": [{"request": r[0], "candidates": r[1], "p50_ms": r[2], "p99_ms": r[3], "ratio": r[4]} for r in rows],
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
