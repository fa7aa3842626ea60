"""Similar items (``GET /v1/items/{id}/similar``): the text vector alone (the route before issue 23,
``Catalogue.similar``) against the hybrid (``retrieval/pipeline/similar.py``: co-occurrence, the
dense text vector and BM25 over the item's text, fused), on an item-to-item task from the shared
dataset, paired query by query in the same run.

The task: for each user, the query is their second-to-last item and the target their last item
(test); the third-to-last and the second-to-last (validation, on which the fusion settings are
chosen from a small grid; test is only reported). The co-occurrence index holds only training
interactions: every user's items before their target, so no target is in it. Slices:

- ``all``: a seeded sample of users;
- ``cold_items``: targets nobody took in training: a seeded 10% of items (the evaluation's
  ``cold_slice_items``) are taken out of every training sequence, plus any target that is in no
  training sequence anyway; every user whose target is one of them (up to ``--users``);
- ``long_tail``: the ``all`` users whose target is outside the 20% most-taken items in training.

    python benchmarks/similar_items.py [--users 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, percentile, save, table  # noqa: E402
from retrieval.engine import Engine, EngineConfig  # noqa: E402
from retrieval.evaluation import metrics  # noqa: E402
from retrieval.evaluation.replay import EvalConfig, cold_slice_items  # noqa: E402
from retrieval.pipeline.fusion import SourceResult, fuse  # noqa: E402
from retrieval.pipeline.similar import SimilarConfig, SimilarItems  # noqa: E402
from retrieval.state.cooccurrence import CoOccurrenceIndex  # noqa: E402

K = 10
DROP = {"test": 1, "valid": 2}  # the target's position from the end; the query is the item before it
# The validation grid: collaborative and lexical weights against dense 1, the no-opinion credit,
# and plain or sequential co-occurrence (proximity, backward).
GRID_COLLABORATIVE = (1.0, 2.0, 3.0, 5.0)
GRID_LEXICAL = (0.0, 0.5, 1.0)
GRID_CREDIT = (0.5, 1.0)
GRID_SEQUENTIAL = ((0.0, 1.0), (1.0, 0.5))


def cases(sequences: dict[str, list[str]], split: str) -> dict[str, tuple[str, str, list[str]]]:
    """user -> (query, target, training sequence): the target and what follows it left out."""
    drop = DROP[split]
    out = {}
    for user, seq in sequences.items():
        if len(seq) >= drop + 2 and seq[-drop - 1] != seq[-drop]:
            out[user] = (seq[-drop - 1], seq[-drop], seq[:-drop])
    return out


def build_index(sequences: dict[str, list[str]], leave_out: set[str] = frozenset()) -> CoOccurrenceIndex:
    """Every user's training items, in order, minus ``leave_out`` (items treated as new)."""
    index = CoOccurrenceIndex()
    for user in sorted(sequences):
        for item in sequences[user]:
            if item not in leave_out:
                index.add(user, item)
    return index


def split_plan(dataset, split: str, n_users: int, seed: int, cold: set[str]):
    """(cases, slices: {slice: (users, index)}) of one split."""
    split_cases = cases(dataset.sequences, split)
    # Every user's items before their target (whether or not the user is a query of this split).
    training = {u: seq[:-DROP[split]] for u, seq in dataset.sequences.items()}
    taken = Counter(i for seq in training.values() for i in set(seq))
    head = {i for i, _ in taken.most_common(round(len(dataset.items) * 0.2))}
    rng = random.Random(seed)
    eligible = sorted(split_cases)
    sample = sorted(rng.sample(eligible, min(n_users, len(eligible))))
    new = cold | {c[1] for c in split_cases.values() if c[1] not in taken}
    cold_users = [u for u in eligible if split_cases[u][1] in new]
    cold_users = sorted(rng.sample(cold_users, min(n_users, len(cold_users))))
    full, without_new = build_index(training), build_index(training, new)
    return split_cases, {"all": (sample, full), "cold_items": (cold_users, without_new),
                         "long_tail": ([u for u in sample if split_cases[u][1] not in head], full)}


def ranks_of(lists: list[list[str]], targets: list[str]) -> list[int | None]:
    return [metrics.target_rank(lst, t) for lst, t in zip(lists, targets)]


def summary(new: list[int | None], old: list[int | None]) -> dict[str, float]:
    out: dict[str, float] = {"queries": len(new)}
    for name, metric in (("ndcg@10", metrics.ndcg_at), ("recall@10", metrics.recall_at)):
        a = np.array([metric(r, K) for r in new], dtype=float)
        b = np.array([metric(r, K) for r in old], dtype=float)
        se = (lambda x: float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0)
        diff, diff_se = metrics.paired_difference(a, b)
        out.update({f"text_{name}": float(b.mean()) if b.size else 0.0, f"text_{name}_se": se(b),
                    f"hybrid_{name}": float(a.mean()) if a.size else 0.0, f"hybrid_{name}_se": se(a),
                    f"diff_{name}": diff, f"diff_{name}_se": diff_se,
                    f"ratio_{name}": float(a.mean() / b.mean()) if b.size and b.mean() else float("nan")})
    return out


def choose(catalogue, plan, split_cases, seed_config: SimilarConfig) -> tuple[SimilarConfig, list[dict], dict]:
    """The grid point with the best validation NDCG@10 on the ``all`` slice among those that do not
    lose cold targets: cold-items NDCG@10 at least the text vector's alone (the route's promise for
    new items; the best on ``all`` alone gave up most of the cold slice for a hair on ``all``).
    Each source's list is read once per query and setting, then fused under every weighting.
    Returns the config, the grid's rows and the text-only validation NDCG@10 per slice."""
    rows = []
    text: dict[str, float] = {}
    lists: dict[tuple[str, tuple[float, float]], list[list[SourceResult]]] = {}
    for slice_name in ("all", "cold_items"):
        users, index = plan[slice_name]
        for seq in GRID_SEQUENTIAL:
            similar = SimilarItems(catalogue, index, replace(seed_config, collaborative_proximity=seq[0],
                                                             collaborative_backward=seq[1]))
            pool = max(seed_config.min_pool, K)
            lists[slice_name, seq] = [similar.candidates(catalogue.get(split_cases[u][0], with_vector=True), pool)
                                      for u in tqdm(users, desc=f"valid {slice_name} lists {seq}", mininterval=5)]
    for slice_name in ("all", "cold_items"):
        users = plan[slice_name][0]
        text[slice_name] = float(np.mean([  # the dense list is ``Catalogue.similar``'s (same search)
            metrics.ndcg_at(metrics.target_rank([i for i, _ in next(r for r in results if r.name == "dense").ranked],
                                                split_cases[u][1]), K)
            for u, results in zip(users, lists[slice_name, GRID_SEQUENTIAL[0]])]))
    for seq, wc, wl, credit in itertools.product(GRID_SEQUENTIAL, GRID_COLLABORATIVE, GRID_LEXICAL, GRID_CREDIT):
        weights = {"collaborative": wc, "dense": 1.0, "lexical": wl}
        row = {"proximity": seq[0], "backward": seq[1], **weights, "no_opinion_credit": credit}
        for slice_name in ("all", "cold_items"):
            users = plan[slice_name][0]
            ndcg = []
            for u, results in zip(users, lists[slice_name, seq]):
                fused = fuse([SourceResult(r.name, r.ranked, weights[r.name], r.knows) for r in results],
                             seed_config.rrf_k, credit)[:K]
                ndcg.append(metrics.ndcg_at(metrics.target_rank([c.id for c in fused], split_cases[u][1]), K))
            row[f"{slice_name}_ndcg@10"] = float(np.mean(ndcg))
        rows.append(row)
    admissible = [r for r in rows if r["cold_items_ndcg@10"] >= text["cold_items"]] or rows
    best = max(admissible, key=lambda r: (r["all_ndcg@10"], r["cold_items_ndcg@10"]))
    config = replace(seed_config, weights={n: best[n] for n in ("collaborative", "dense", "lexical")},
                     no_opinion_credit=best["no_opinion_credit"], collaborative_proximity=best["proximity"],
                     collaborative_backward=best["backward"])
    return config, rows, text


def evaluate(catalogue, plan, split_cases, configs: dict[str, SimilarConfig]) -> dict:
    """Text-only and each hybrid config on every slice, through the served calls."""
    out: dict = {}
    for slice_name, (users, index) in plan.items():
        targets = [split_cases[u][1] for u in users]
        took: dict[str, list[float]] = {"text": []}
        text_lists = []
        for u in tqdm(users, desc=f"test {slice_name} text", mininterval=5):
            started = time.perf_counter()
            hits = catalogue.similar(split_cases[u][0], K)
            took["text"].append((time.perf_counter() - started) * 1000)
            text_lists.append([h.id for h in hits])
        text_ranks = ranks_of(text_lists, targets)
        out[slice_name] = {}
        for name, config in configs.items():
            similar = SimilarItems(catalogue, index, config)
            took[name] = []
            lists, proposed = [], Counter()
            for u in tqdm(users, desc=f"test {slice_name} {name}", mininterval=5):
                started = time.perf_counter()
                result = similar.similar(split_cases[u][0], K)
                took[name].append((time.perf_counter() - started) * 1000)
                lists.append([i.id for i in result.items])
                proposed.update(s for i in result.items for s in i.sources)
            n_items = sum(len(lst) for lst in lists) or 1
            out[slice_name][name] = {
                **summary(ranks_of(lists, targets), text_ranks),
                "proposed_by": {s: proposed[s] / n_items for s in sorted(proposed)},
                "p50_ms": percentile(took[name], 50), "text_p50_ms": percentile(took["text"], 50)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not args.dataset.exists():
        print(f"skipping: {args.dataset} is not here")
        return 0
    from encoders import BiEncoder
    from retrieval.evaluation.datasets import load_dataset
    from retrieval.evaluation.replay import encode_catalogue

    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    encoder = BiEncoder()
    points = encode_catalogue(dataset, encoder)
    engine = Engine.open(EngineConfig(data_dir=Path(tempfile.mkdtemp(prefix="hybridrec-bench-similar-"))),
                         encoder=encoder)
    try:
        for start in range(0, len(points), 1000):
            engine.catalogue.write(points[start:start + 1000])
        engine.catalogue.optimize()
        cold = cold_slice_items(dataset, EvalConfig())
        valid_cases, valid_plan = split_plan(dataset, "valid", args.users, args.seed, cold)
        chosen, grid, valid_text = choose(engine.catalogue, valid_plan, valid_cases, SimilarConfig())
        test_cases, test_plan = split_plan(dataset, "test", args.users, args.seed, cold)
        configs = {"hybrid": chosen}
        if chosen != SimilarConfig():
            configs["hybrid_served_default"] = SimilarConfig()
        results = evaluate(engine.catalogue, test_plan, test_cases, configs)
    finally:
        engine.close()

    def pm(row, key):
        return f"{row[key]:.4f} ± {row[key + '_se']:.4f}"

    for name in configs:
        rows = []
        for slice_name, by_config in results.items():
            r = by_config[name]
            rows.append([slice_name, int(r["queries"]), pm(r, "text_ndcg@10"), pm(r, "hybrid_ndcg@10"),
                         f"{r['diff_ndcg@10']:+.4f} ± {r['diff_ndcg@10_se']:.4f}", f"{r['ratio_ndcg@10']:.2f}x",
                         pm(r, "text_recall@10"), pm(r, "hybrid_recall@10"),
                         f"{r['diff_recall@10']:+.4f} ± {r['diff_recall@10_se']:.4f}", f"{r['ratio_recall@10']:.2f}x",
                         f"{r['text_p50_ms']:.1f} / {r['p50_ms']:.1f}"])
        print()
        print(table(["slice", "queries", "text NDCG@10", f"{name} NDCG@10", "paired diff", "ratio",
                     "text Recall@10", f"{name} Recall@10", "paired diff", "ratio", "p50 ms text / hybrid"], rows,
                    title=f"Similar items on test: text vector alone vs {name} ({asdict(configs[name])})"))
    best = sorted(grid, key=lambda r: -r["all_ndcg@10"])[:8]
    print()
    print(table(list(best[0]), [list(r.values()) for r in best],
                title=f"Validation grid, best eight by all NDCG@10 (text vector alone: all {valid_text['all']:.4f}, "
                      f"cold_items {valid_text['cold_items']:.4f})"))
    path = save("similar_items", {
        "dataset": {"name": dataset.name, **dataset.stats()},
        "users": args.users, "seed": args.seed, "cold_items_held_out": len(cold), "k": K,
        "chosen_on_validation": asdict(chosen), "served_default": asdict(SimilarConfig()),
        "test": results, "validation_grid": grid, "validation_text_only_ndcg@10": valid_text,
        "selection": "best validation all NDCG@10 among grid points with cold_items NDCG@10 >= text-only's", "seconds": time.perf_counter() - started})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
