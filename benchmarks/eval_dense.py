"""`hybridrec evaluate` on a dense dataset (issue 23): wall time per method and per request.

Generates the dense synthetic dataset of ``scripts/make_dense_dataset.py`` (about 1,700 items,
950 users with about 100 interactions each, 37 of them with 500 to 800) into a temporary folder,
runs the evaluation with every default method on every slice (``retrieval.evaluation.replay.evaluate``,
what `hybridrec evaluate --dataset <it>` runs), and prints the time of the catalogue's encoding, of
each replay, and of each method per slice, with milliseconds per request.

Baseline in the same run, on the warm replay's index and ``--exact-users`` evaluated users'
requests: the classic item-kNN scores as the evaluation computed them before the service's lists
were bounded (``CoOccurrenceIndex.exact_neighbours`` over the request's history: about a second a
user on this log), as it computed them until issue 23 (the service's bounded lists,
``CoOccurrenceIndex.neighbours``), and as it computes them now (``replay.ItemKNN``, exact over the
newest 31 history items), with the top-10 agreement of each with the exact walk.

    python benchmarks/eval_dense.py [--max-users N] [--exact-users 5] [--keep /tmp/dense-eval]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import save, table  # noqa: E402
from scripts.make_dense_dataset import write_dataset  # noqa: E402


def itemknn_baselines(dataset, encoder, points, config, users: int) -> list[list]:
    """Classic item-kNN scores for ``users`` evaluated users: exact walk, bounded lists, ``ItemKNN``."""
    import random

    from retrieval.evaluation.replay import CUTOFF, ItemKNN, Replay, leave_one_out

    cases = leave_one_out(dataset.sequences, config.split)
    replay = Replay(dataset, encoder, {u: c.history for u, c in cases.items()}, points, config, "itemknn-bench")
    try:
        index = replay.engine.index
        limit = 2 * max(replay.engine.recommender.config.min_pool, 4 * CUTOFF)  # what the source asks for
        limit_history = replay.engine.profiles.config.max_events  # pipeline/context.py
        knn = ItemKNN(index)
        picked = random.Random(config.seed).sample(sorted(cases), min(users, len(cases)))
        histories = [index.history(u)[-limit_history:] for u in picked]
        rows, reference = [], None
        for name, run in (("exact walk (before the bounded lists)",
                           lambda h: index.exact_neighbours(h, decay=0.8, limit=limit)),
                          ("bounded lists (until issue 23)", lambda h: index.neighbours(h, decay=0.8, limit=limit)),
                          ("ItemKNN (now), first use", lambda h: knn.neighbours(h, decay=0.8, limit=limit)),
                          ("ItemKNN (now), rows cached", lambda h: knn.neighbours(h, decay=0.8, limit=limit))):
            started = time.perf_counter()
            tops = [list(run(h))[:10] for h in histories]
            ms = 1000 * (time.perf_counter() - started) / len(histories)
            reference = reference or tops
            agreement = sum(len(set(a) & set(b)) for a, b in zip(tops, reference)) / (10 * len(tops))
            rows.append([name, len(histories), round(ms, 2), round(agreement, 3)])
        return rows
    finally:
        replay.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-users", type=int, help="evaluate a seeded sample of this many users (default: all)")
    parser.add_argument("--exact-users", type=int, default=5, help="users for the item-kNN baselines (0: skip)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", type=Path, help="write the dataset here instead of a temporary folder")
    args = parser.parse_args(argv)

    from encoders import BiEncoder
    from retrieval.evaluation.datasets import load_dataset
    from retrieval.evaluation.replay import EvalConfig, encode_catalogue, evaluate

    folder = args.keep or Path(tempfile.mkdtemp(prefix="hybridrec-eval-dense-"))
    shape = write_dataset(folder)
    print(f"dataset: {shape}", flush=True)
    dataset = load_dataset(folder)
    config = EvalConfig(seed=args.seed, max_users=args.max_users)
    started = time.perf_counter()
    encoder = BiEncoder()
    points = encode_catalogue(dataset, encoder)
    encode_s = time.perf_counter() - started
    results = evaluate(dataset, encoder, config, points=points)
    total_s = time.perf_counter() - started
    timings = results["timings"]

    rows = [["(encode the catalogue)", "", "", round(encode_s, 1), ""]]
    rows += [[f"(replay: {name})", "", "", round(s, 1), ""] for name, s in timings["replay"].items()]
    per_method: dict[str, float] = {}
    for slice_name, methods in timings["methods"].items():
        users = next(iter(results["slices"][slice_name].values()))["users"]
        for method, seconds in methods.items():
            per_method[method] = per_method.get(method, 0.0) + seconds
            rows.append([method, slice_name, users, round(seconds, 1),
                         round(1000 * seconds / users, 1) if users else ""])
    print(table(["method", "slice", "requests", "seconds", "ms / request"], rows,
                title=f"hybridrec evaluate on the dense set: {total_s:.0f} s in all "
                      f"({results['config']['evaluated_users']} users)"))
    print()
    print(table(["method", "seconds, all slices"], [[m, round(s, 1)] for m, s in per_method.items()]))
    print()
    print(table(["slice", "method", "NDCG@10", "Recall@10"],
                [[s, m, round(r["ndcg@10"], 4), round(r["recall@10"], 4)]
                 for s, methods in results["slices"].items() for m, r in methods.items() if r.get("users")]))
    baseline = []
    if args.exact_users:
        baseline = itemknn_baselines(dataset, encoder, points, config, args.exact_users)
        print()
        print(table(["classic item-kNN scores", "requests", "ms / request", "top-10 agreement with the exact walk"],
                    baseline))
    path = save("eval_dense", {
        "dataset": shape, "config": results["config"], "total_seconds": total_s, "encode_seconds": encode_s,
        "timings": timings, "seconds_per_method": per_method,
        "slices": {s: {m: {k: r[k] for k in ("users", "ndcg@10", "recall@10") if k in r} for m, r in methods.items()}
                   for s, methods in results["slices"].items()},
        "itemknn_baselines": [dict(zip(["scores", "requests", "ms_per_request", "top10_agreement"], row))
                              for row in baseline]})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
