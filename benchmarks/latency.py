"""Recommendation latency through the HTTP API at 10k and 100k items (p50 / p99).

A real server (`hybridrec serve`) on a loopback port, one keep-alive client, requests one at a time.
Catalogue: synthetic items from the demo generator. Encoding 100k texts on 2 CPU cores takes
~20 minutes, so a base of 2,000 items is really encoded and the rest get a base item's vector plus
small Gaussian noise (their own titles, brands, prices and BM25 vectors); latency depends on the
index, not on where the vectors came from. Users and their events go through the real event path.
Baselines in the same run: GET /health (HTTP floor) and the raw in-process Qdrant top-100 query
(retrieval floor).

    python benchmarks/latency.py [--sizes 10000 100000] [--requests 300]
"""

from __future__ import annotations

import argparse
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import percentile, save, table  # noqa: E402
from encoders import BiEncoder, item_text  # noqa: E402
from retrieval.engine import Engine, EngineConfig  # noqa: E402
from retrieval.storage.records import parse_item  # noqa: E402
from retrieval.storage.vector_store import StoredPoint  # noqa: E402
from scripts.make_demo_catalogue import CATEGORIES, make_items  # noqa: E402

BASE = 2000
WORDS = ["quiet", "wireless", "ergonomic", "compact", "black", "cheap", "premium", "for travel", "for students",
         "heavy duty", "rechargeable", "USB-C", "adjustable", "large", "small", "silent", "fast", "refillable"]


def build(data_dir: Path, n_items: int, encoder: BiEncoder, base_cache: dict, rng: random.Random) -> list[str]:
    engine = Engine.open(EngineConfig(data_dir=data_dir), encoder=encoder)
    rows = list(make_items(n_items, seed=23))
    if "points" not in base_cache:
        items, _ = engine.catalogue.validate(rows[:BASE])
        base_cache["points"] = engine.catalogue.encode(items)
    base = base_cache["points"]
    noise = np.random.default_rng(5)
    for start in range(0, n_items, 2000):
        chunk = rows[start:start + 2000]
        points = []
        for offset, row in enumerate(chunk):
            i = start + offset
            if i < BASE:
                points.append(base[i])
                continue
            item = parse_item(row)
            vec = base[i % BASE].vector + noise.normal(0, 0.03, base[0].vector.shape).astype(np.float32)
            sparse = engine.catalogue.bm25.encode_documents([item_text(item.payload())])[0]
            points.append(StoredPoint(item.id, item.payload(), vec / np.linalg.norm(vec), sparse))
        engine.catalogue.write(points)
    engine.catalogue.optimize()
    ids = [r["id"] for r in rows]
    for u in range(300):  # users with 5-15 events in 1-2 categories, through the real event path
        k = rng.randint(5, 15)
        engine.profiles.record([{"user_id": f"user{u}", "type": rng.choice(["view", "click", "purchase"]),
                                 "item_id": ids[rng.randrange(n_items // 12) * 12 + (u % 12)]} for _ in range(k)])
    engine.close()
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(data_dir: Path, ids: list[str], n_requests: int, rng: random.Random) -> dict[str, list[float]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir",
                             str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, "HYBRIDREC_LOG_LEVEL": "warning"})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        categories = list(CATEGORIES)

        def query() -> str:  # distinct texts, so the query-vector cache never helps
            return f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(categories).lower()} {rng.randint(0, 10**6)}"

        kinds = {
            "health (HTTP floor)": lambda: ("GET", "/health", None),
            "user_id": lambda: ("POST", "/v1/recommendations", {"user_id": f"user{rng.randrange(300)}"}),
            "query": lambda: ("POST", "/v1/recommendations", {"query": query()}),
            "user + query + filters": lambda: ("POST", "/v1/recommendations", {
                "user_id": f"user{rng.randrange(300)}", "query": query(),
                "filters": {"categories": [rng.choice(categories)], "price_max": rng.choice([50, 200, 1000])}}),
            "history (3 items)": lambda: ("POST", "/v1/recommendations", {"history": rng.sample(ids, 3)}),
            "nothing (popular)": lambda: ("POST", "/v1/recommendations", {}),
        }
        timings: dict[str, list[float]] = {}
        with httpx.Client(base_url=base, timeout=30) as http:
            for name, make in kinds.items():
                samples = []
                for n in range(n_requests + 20):
                    method, path, body = make()
                    started = time.perf_counter()
                    r = http.request(method, path, json=body)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert r.status_code == 200, r.text
                    if n >= 20:  # warm-up
                        samples.append(elapsed)
                timings[name] = samples
        return timings
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def raw_search(data_dir: Path, encoder: BiEncoder, n: int) -> list[float]:
    engine = Engine.open(EngineConfig(data_dir=data_dir), encoder=encoder)
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(n):
        v = rng.normal(size=encoder.dim).astype(np.float32)
        started = time.perf_counter()
        engine.store.search_dense("items", v / np.linalg.norm(v), 100)
        samples.append((time.perf_counter() - started) * 1000)
    engine.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    encoder = BiEncoder()
    cache: dict = {}
    results = {}
    rows = []
    for size in args.sizes:
        data_dir = Path(tempfile.mkdtemp(prefix=f"hybridrec-bench-{size}-"))
        rng = random.Random(size)
        started = time.perf_counter()
        ids = build(data_dir, size, encoder, cache, rng)
        print(f"built {size} items in {time.perf_counter() - started:.0f} s", flush=True)
        raw = raw_search(data_dir, encoder, args.requests)
        timings = {"raw Qdrant top-100 (retrieval floor)": raw, **measure(data_dir, ids, args.requests, rng)}
        raw_p50 = percentile(raw, 50)
        results[size] = {}
        for name, samples in timings.items():
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            results[size][name] = {"p50_ms": p50, "p99_ms": p99, "n": len(samples)}
            rows.append([size, name, p50, p99, p50 / raw_p50])
    print(table(["items", "request", "p50 ms", "p99 ms", "p50 / raw Qdrant p50"], rows,
                title="Recommendation latency through the HTTP API (one client, sequential)"))
    print(f"\nwrote {save('latency', {'sizes': results, 'requests_per_kind': args.requests})}")


if __name__ == "__main__":
    main()
