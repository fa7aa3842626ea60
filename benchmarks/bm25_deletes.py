"""BM25 after deletes: how far scores drift while Qdrant's segments still count deleted items in
their IDF (posting lists are not rewritten on delete; Qdrant counts indexed vectors so that scores
stay consistent), and what brings them back: a restart, or ``hybridrec rebuild-index``.

For each catalogue (the shared dataset's item texts when present, and synthetic items of
``storage_scale.py`` at each --sizes), items get random 384-d vectors and the BM25 of their text,
HNSW is built (``optimize``, as ingestion does), then a share of them (--deleted) is deleted.
--queries BM25 queries (item titles) are compared with a store that never held the deleted items,
which is what ``rebuild-index`` writes (the same writes in the same order otherwise):
- ``as left`` (the baseline): the store right after the deletes, and after ``optimize`` (Qdrant
  vacuums a segment only past 20% deleted);
- ``restarted``: the store closed and opened again (a segment that is not HNSW-indexed yet rebuilds
  its BM25 index in memory on open; an indexed one keeps its posting lists).
Reported: queries whose top 10 differs as a set, the largest relative score error, the time to
open the store again and to rebuild it, and BM25 query time.

    python benchmarks/bm25_deletes.py [--sizes 10000,30000] [--deleted 0.01,0.1] [--queries 300] [--no-save]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASET, percentile, save, table  # noqa: E402
from benchmarks.storage_scale import points_with_random_vectors, synthetic_items  # noqa: E402
from retrieval.evaluation.datasets import load_dataset  # noqa: E402
from retrieval.state.bm25 import Bm25Encoder  # noqa: E402
from retrieval.state.catalogue import items_spec  # noqa: E402
from retrieval.storage.edge import EdgeVectorStore  # noqa: E402
from retrieval.storage.records import parse_item  # noqa: E402
from retrieval.storage.vector_store import StoredPoint  # noqa: E402

ITEMS = "items"
DIM = 384
TOP = 10


def dataset_items(rng: np.random.Generator, bm25: Bm25Encoder) -> list[StoredPoint] | None:
    if not SHARED_DATASET.is_dir():
        return None
    return points_with_random_vectors([parse_item(row).payload() for row in load_dataset(SHARED_DATASET).items],
                                      rng, bm25)


def built_store(path: Path, points: list[StoredPoint]) -> EdgeVectorStore:
    store = EdgeVectorStore(path)
    store.ensure_collection(items_spec(DIM))
    for first in range(0, len(points), 2000):
        store.upsert(ITEMS, points[first:first + 2000], durable=False)
    store.flush(ITEMS)
    store.optimize(ITEMS)
    return store


def answers(search, queries) -> tuple[list[dict[str, float]], list[float]]:
    hits, times = [], []
    for query in queries:
        started = time.perf_counter()
        found = search(query)
        times.append(1000 * (time.perf_counter() - started))
        hits.append({h.id: h.score for h in found})
    return hits, times


def drift(got: list[dict[str, float]], want: list[dict[str, float]]) -> dict:
    differ = sum(1 for g, w in zip(got, want) if set(g) != set(w))
    errors = [abs(g[i] - w[i]) / abs(w[i]) for g, w in zip(got, want) for i in g.keys() & w.keys() if w[i]]
    return {"top10_sets_differ": differ, "max_relative_error": max(errors, default=0.0),
            "mean_relative_error": float(np.mean(errors)) if errors else 0.0}


def measure(label: str, points: list[StoredPoint], share: float, queries: int, rng: np.random.Generator,
            bm25: Bm25Encoder) -> dict:
    order = rng.permutation(len(points))
    deleted = {points[i].id for i in order[: int(round(share * len(points)))]}
    kept = [p for p in points if p.id not in deleted]
    texts = [p.payload["title"] for p in kept[:: max(1, len(kept) // queries)]][:queries]
    query_vectors = [bm25.encode_query(t) for t in texts]
    with tempfile.TemporaryDirectory(prefix="hybridrec-bm25-") as scratch:
        started = time.perf_counter()
        rebuilt = built_store(Path(scratch) / "rebuilt", kept)
        rebuild_s = time.perf_counter() - started
        want, _ = answers(lambda v: rebuilt.search_sparse(ITEMS, v, TOP), query_vectors)
        rebuilt.close()
        store = built_store(Path(scratch) / "store", points)
        store.delete(ITEMS, sorted(deleted))
        answers(lambda v: store.search_sparse(ITEMS, v, TOP), query_vectors[:20])  # segments mapped in
        as_left, query_ms = answers(lambda v: store.search_sparse(ITEMS, v, TOP), query_vectors)
        store.optimize(ITEMS)
        optimized, _ = answers(lambda v: store.search_sparse(ITEMS, v, TOP), query_vectors)
        store.close()
        started = time.perf_counter()
        store = EdgeVectorStore(Path(scratch) / "store")
        open_s = time.perf_counter() - started
        restarted, _ = answers(lambda v: store.search_sparse(ITEMS, v, TOP), query_vectors)
        store.close()
    return {"catalogue": label, "items": len(points), "deleted": len(deleted), "queries": len(texts),
            "as_left": drift(as_left, want), "optimized": drift(optimized, want), "restarted": drift(restarted, want),
            "open_s": open_s, "rebuild_s": rebuild_s, "query_p50_ms": percentile(query_ms, 50)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000", help="synthetic catalogue sizes")
    parser.add_argument("--deleted", default="0.01,0.1", help="shares of the catalogue deleted")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    bm25 = Bm25Encoder()
    rng = np.random.default_rng(args.seed)
    catalogues = []
    office = dataset_items(rng, bm25)
    if office is None:
        print(f"{SHARED_DATASET} is absent: synthetic catalogues only")
    else:
        catalogues.append(("Office (real texts)", office))
    catalogues += [(f"synthetic {n:,}", synthetic_items(n, rng, bm25)) for n in map(int, args.sizes.split(","))]
    shares = [float(s) for s in args.deleted.split(",")]
    rows = [measure(label, points, share, args.queries, rng, bm25)
            for label, points in tqdm(catalogues, desc="catalogues") for share in shares]
    def cell(d: dict, queries: int) -> str:
        return f"{d['top10_sets_differ']} / {queries}, {100 * d['max_relative_error']:.2f}%"

    print(table(
        ["catalogue", "items", "deleted", "as left (baseline)", "after optimize", "restarted",
         "rebuilt (the reference)", "open again s", "rebuild s", "BM25 query p50 ms"],
        [[r["catalogue"], f"{r['items']:,}", f"{r['deleted']:,}", cell(r["as_left"], r["queries"]),
          cell(r["optimized"], r["queries"]), cell(r["restarted"], r["queries"]), f"0 / {r['queries']}, 0.00%",
          f"{r['open_s']:.2f}", f"{r['rebuild_s']:.1f}", f"{r['query_p50_ms']:.2f}"] for r in rows],
        title="BM25 after deletes against a store that never held the deleted items: queries whose top 10 "
              "differs, and the largest relative score error"))
    if not args.no_save:
        print("saved", save("bm25_deletes", {"config": vars(args), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
