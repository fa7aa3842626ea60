"""The reranker on the shared dataset: training time per epoch, its validation verdict against the
retrieval order, and rerank latency for 20/50/100/200 candidates (ratio to retrieval alone).

The event log is the test split's training part (every user's items but the last), replayed
through the real event path; the trainer itself holds out each user's newest logged item and 10%
of users for validation.

    python benchmarks/rerank.py [--max-groups 3000] [--epochs 1] [--device auto] [--latency-devices cpu cuda]

With ``--latency-devices cpu cuda`` the same trained model is timed on both, so the CUDA / CPU
ratio comes from one machine and one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    SHARED_DATASET,
    percentile,
    replay_shared_dataset,
    save,
    table,
)
from encoders.cross_encoder import CrossEncoderReranker  # noqa: E402
from encoders.device import resolve_device  # noqa: E402
from encoders.text import candidate_text, context_text  # noqa: E402
from retrieval.evaluation import Replay  # noqa: E402
from retrieval.recommender import RecommendRequest  # noqa: E402
from retrieval.reranker_training import TrainingSettings, train_reranker  # noqa: E402

DATASET = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-office"


def latency(replay: Replay, model: CrossEncoderReranker, users: list[str], runs: int = 20) -> list[list]:
    recommender = replay.engine.recommender
    rows = []
    base = []
    for user in users[:runs]:
        started = time.perf_counter()
        recommender.recommend(RecommendRequest(user_id=user, k=10, rerank=False))
        base.append((time.perf_counter() - started) * 1000)
    base_p50 = percentile(base, 50)
    rows.append(["retrieval only (baseline)", 0, base_p50, percentile(base, 99), 1.0])
    payloads = {p.id: p.payload for p in replay.engine.catalogue.get_many(
        [i for u in users[:runs] for i in recommender.profiles.index.history(u)[-5:]]).values()}
    for n in (20, 50, 100, 200):
        samples = []
        for user in users[:runs]:
            items = recommender.recommend(RecommendRequest(user_id=user, k=min(n, 100), rerank=False)).items
            docs = [candidate_text(i.payload) for i in items]
            docs = (docs * (n // max(1, len(docs)) + 1))[:n]
            history = recommender.profiles.index.history(user)[-5:][::-1]
            context = context_text([payloads[i] for i in history if i in payloads])
            started = time.perf_counter()
            model.score([context] * n, docs)
            samples.append((time.perf_counter() - started) * 1000)
        rows.append([f"rerank {n} candidates ({model.device})", n, percentile(samples, 50), percentile(samples, 99),
                     percentile(samples, 50) / base_p50])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-groups", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--validation-users", type=int, default=500)
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--latency-devices", nargs="+", help="time the trained model on each (default: --device)")
    args = parser.parse_args()
    loaded = replay_shared_dataset(args.dataset, "test", "rerank")
    if loaded is None:
        return
    _, _, _, cases, replay = loaded
    settings = TrainingSettings(epochs=args.epochs, max_groups=args.max_groups, device=args.device,
                                max_validation_users=args.validation_users)
    report = train_reranker(replay.engine.recommender, replay.engine.rerankers, settings,
                            progress_factory=lambda desc, total: tqdm(total=total, desc=desc, mininterval=2))
    meta = report.metadata
    print(f"\n{report.version}: {'accepted' if report.accepted else 'rejected'}: {report.reason}")
    print(table(["epoch", "groups", "pairs", "seconds", "pairs/s", "loss"],
                [[e["epoch"], meta["groups"], e["pairs"], e["seconds"], e["pairs"] / e["seconds"], e["loss"]]
                 for e in meta["epochs"]], title=f"Reranker training ({settings.device})"))
    print(table(["order", "users", "NDCG@10", "Recall@10", "coverage@10", "gini@10"],
                [[k, v["users"], v["ndcg@10"], v["recall@10"], v["coverage@10"], v["gini@10"]]
                 for k, v in meta["validation"].items()], title="Validation (held-out newest item, held-out users)"))
    users = sorted(cases)[:200]
    rows = []
    for device in args.latency_devices or [args.device]:
        model = CrossEncoderReranker(replay.engine.rerankers.root / report.version, device=device).for_inference()
        model.score(["warm up"] * 8, ["warm up"] * 8)  # CUDA context and kernels before the clock
        rows += latency(replay, model, users)[0 if not rows else 1:]
    print(table(["request", "candidates", "p50 ms", "p99 ms", "p50 / retrieval p50"], rows,
                title="Rerank latency (one request at a time)"))
    replay.close()
    path = save(f"rerank_{resolve_device(settings.device).split(':')[0]}", {
        "version": report.version, "accepted": report.accepted, "reason": report.reason,
        "epochs": meta["epochs"], "groups": meta["groups"], "validation": meta["validation"],
        "latency": [{"request": r[0], "candidates": r[1], "p50_ms": r[2], "p99_ms": r[3], "ratio": r[4]} for r in rows],
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
