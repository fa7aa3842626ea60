"""The collaborative source on a dense event log: cost per call against history length (p50 / p99).

A synthetic log built in memory straight into a ``CoOccurrenceIndex``: ``--items`` items whose
popularity falls as a power law (as in real catalogues), and ``--users`` users of whom 50% have
10 events, 45% have 100 and 5% have 1,000 (about 100k events at the defaults). A request reads the
user's newest 200 items, as ``pipeline/context.py`` does (``ProfileConfig.max_events``), with the
served settings (decay, proximity, backward from ``RecommendConfig``).

Baseline in the same run: the exact computation (``CoOccurrenceIndex.exact_neighbours``: the
algorithm ``neighbours`` ran before its lists were bounded, and what ``leave_out`` still runs). The
new path is timed cold (no list cached yet: the first requests after a start-up), warm, and right
after the user's own new event. Also: building the index, computing every item's list, the index's
memory, agreement of the two top-10s, and a start-up from the snapshot against a rebuild. And the
interest source's audiences (``audience_costs``): read and cached, against the popularity prior.

``--pipeline`` also runs whole recommendations (``Recommender.recommend`` for a ``user_id``, every
default source) through an ``Engine`` on a scratch data directory: the demo catalogue's items,
really encoded (a minute or two on 2 CPU cores), and the same log appended to its event log. The
baseline there is the same engine with the exact computation in the collaborative source.

    python benchmarks/dense_log.py [--items 1700] [--users 1000] [--calls 200] [--exact-calls 5] [--pipeline]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import percentile, save, table  # noqa: E402
from retrieval.pipeline.config import RecommendConfig  # noqa: E402
from retrieval.state.cooccurrence import CoOccurrenceIndex  # noqa: E402
from retrieval.state.profiles import ProfileConfig  # noqa: E402

LENGTHS = {10: 0.50, 100: 0.45, 1000: 0.05}  # events per user -> share of users
POOL = 2 * RecommendConfig().min_pool  # CollaborativeSource asks for twice the fusion pool


def dense_log(n_items: int, n_users: int, seed: int) -> tuple[list[tuple[str, str]], dict[int, list[str]]]:
    """Events in time order (users interleaved) and the users of each history length."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    by_length: dict[int, list[str]] = {}
    sequences = []
    for n, (length, share) in enumerate(LENGTHS.items()):
        for u in range(int(round(n_users * share))):
            user = f"user{n}-{u}"
            by_length.setdefault(length, []).append(user)
            items = rng.choice(n_items, size=min(length, n_items), replace=False, p=popularity)
            sequences.append([(user, f"item{i}") for i in items])
    events = []  # interleave users: each step takes the next event of a random unfinished user
    cursors = [0] * len(sequences)
    remaining = list(range(len(sequences)))
    weights = np.array([len(s) for s in sequences], dtype=float)
    order = rng.choice(len(sequences), size=int(weights.sum()), p=weights / weights.sum())
    for s in order:
        if cursors[s] < len(sequences[s]):
            events.append(sequences[s][cursors[s]])
            cursors[s] += 1
    for s in remaining:
        events += sequences[s][cursors[s]:]
    return events, by_length


def build(events: list[tuple[str, str]]) -> CoOccurrenceIndex:
    index = CoOccurrenceIndex()
    for user, item in events:
        index.add(user, item)
    return index


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    out = call()
    return (time.perf_counter() - started) * 1000, out


def pipeline(events: list[tuple[str, str]], by_length: dict[int, list[str]], n_items: int, calls: int,
             exact_calls: int, rng: np.random.Generator) -> tuple[list[list], dict, float]:
    """Whole recommendations per history length, bounded against exact; and the engine's start-up
    (reading the event log into the index)."""
    from retrieval.engine import Engine, EngineConfig
    from retrieval.pipeline.request import RecommendRequest
    from retrieval.storage.records import parse_event
    from scripts.make_demo_catalogue import make_items

    rows, results = [], {}
    with tempfile.TemporaryDirectory() as folder:
        config = EngineConfig(data_dir=Path(folder))
        engine = Engine.open(config)
        ids = [row["id"] for row in make_items(n_items, seed=23)]
        engine.catalogue.upsert(list(make_items(n_items, seed=23)))
        now = time.time() - len(events)
        engine.log.append([parse_event({"user_id": u, "type": "view", "item_id": ids[int(i.removeprefix("item"))]},
                                       now + n) for n, (u, i) in enumerate(events)])
        encoder = engine.encoder
        engine.close()
        open_ms, engine = timed(lambda: Engine.open(config, encoder=encoder))
        try:
            index = engine.index
            # As a start-up would, off the request path; the first table's cold rows are without it.
            index.warm(engine.recommender.config.collaborative_proximity,
                       engine.recommender.config.collaborative_backward)
            for length, users in by_length.items():
                picked = [users[i] for i in rng.choice(len(users), size=calls)]

                def recommend(user: str) -> float:
                    return timed(lambda: engine.recommender.recommend(RecommendRequest(user_id=user, k=10)))[0]

                index.neighbours = index.exact_neighbours  # the baseline: today's walk over the log
                exact = [recommend(u) for u in picked[:exact_calls]]
                del index.neighbours
                for u in picked[:20]:  # warm-up: lists, profile caches, the vector store
                    recommend(u)
                bounded = [recommend(u) for u in picked]
                results[length] = {}
                for name, samples in (("exact collaborative (baseline)", exact), ("bounded collaborative", bounded)):
                    p50, p99 = percentile(samples, 50), percentile(samples, 99)
                    results[length][name] = {"p50_ms": p50, "p99_ms": p99, "n": len(samples)}
                    rows.append([length, name, len(samples), p50, p99, percentile(exact, 50) / p50])
        finally:
            engine.close()
    return rows, results, open_ms


def audience_costs(index: CoOccurrenceIndex, n_items: int, calls: int, rng) -> tuple[list[list], dict]:
    """The interest source's read of a category's audience (``audience_scores``) for random groups
    of items as large as catalogue categories, read afresh and cached, against the popularity prior
    it replaces (``user_counts`` over the same items, ranked)."""
    rows, out = [], {}
    known = index.popular(1)[0][0]  # an item every audience can be asked about
    for size in [n for n in (20, 100, 400) if n <= n_items]:
        prior, cold, cached, audience = [], [], [], []
        for call in range(calls):
            group = [f"item{i}" for i in rng.choice(n_items, size=size, replace=False)]
            prior.append(timed(lambda: sorted(index.user_counts(group).items(), key=lambda kv: -kv[1])[:POOL])[0])
            key = f"bench:{size}:{call}"
            cold.append(timed(lambda: index.audience_scores([(key, 1.0, group)], POOL))[0])
            cached.append(timed(lambda: index.audience_scores([(key, 1.0, group)], POOL))[0])
            audience.append(index.audience_share(key, known)[1])
        base = percentile(prior, 50)
        out[size] = {"audience_users_p50": float(np.median(audience))}
        for name, samples in (("popularity within the group (baseline)", prior), ("audience, read", cold),
                              ("audience, cached", cached)):
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            out[size][name] = {"p50_ms": p50, "p99_ms": p99, "n": len(samples)}
            rows.append([size, int(np.median(audience)), name, p50, p99, p50 / base])
    return rows, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1700)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200, help="new-path calls per history length")
    parser.add_argument("--exact-calls", type=int, default=5, help="baseline calls per history length")
    parser.add_argument("--cold-calls", type=int, default=5, help="calls on an empty cache per history length")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pipeline", action="store_true", help="also whole recommendations through an Engine")
    args = parser.parse_args()
    config, history_cap = RecommendConfig(), ProfileConfig().max_events
    setting = {"decay": config.collaborative_decay, "proximity": config.collaborative_proximity,
               "backward": config.collaborative_backward, "limit": POOL}
    rng = np.random.default_rng(args.seed)

    events, by_length = dense_log(args.items, args.users, args.seed)
    print(f"{len(events)} events, {args.items} items, {sum(map(len, by_length.values()))} users", flush=True)
    gc.collect()
    build_ms, index = timed(lambda: build(events))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = build(events)
    log_bytes = tracemalloc.get_traced_memory()[0] - before
    traced.warm(setting["proximity"], setting["backward"])
    cache_bytes = tracemalloc.get_traced_memory()[0] - before - log_bytes
    tracemalloc.stop()
    traced = None
    warm_ms, computed = timed(lambda: index.warm(setting["proximity"], setting["backward"]))

    rows, results = [], {}
    for length, users in by_length.items():
        picked = [users[i] for i in rng.choice(len(users), size=args.calls)]
        exact, agreement = [], []
        for user in picked[:args.exact_calls]:
            history = index.history(user)[-history_cap:]
            ms, reference = timed(lambda: index.exact_neighbours(history, **setting))
            exact.append(ms)
            top = list(index.neighbours(history, **setting))[:10]
            agreement.append(len(set(top) & set(list(reference)[:10])) / max(1, min(10, len(reference))))
        cold = []
        for user in picked[:args.cold_calls]:
            index._lists.clear()  # as after a start-up: every list this request reads is computed
            history = index.history(user)[-history_cap:]
            cold.append(timed(lambda: index.neighbours(history, **setting))[0])
        index.warm(setting["proximity"], setting["backward"])
        warm = [timed(lambda: index.neighbours(index.history(u)[-history_cap:], **setting))[0] for u in picked]
        own_event = []
        for user in picked:
            index.add(user, f"item{int(rng.integers(args.items))}")
            own_event.append(timed(lambda: index.neighbours(index.history(user)[-history_cap:], **setting))[0])
        base_p50 = percentile(exact, 50)
        results[length] = {}
        for name, samples in (("exact (baseline)", exact), ("bounded, cold cache", cold),
                              ("bounded, warm", warm), ("bounded, after the user's own event", own_event)):
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            results[length][name] = {"p50_ms": p50, "p99_ms": p99, "n": len(samples)}
            rows.append([length, name, len(samples), p50, p99, base_p50 / p50])
        results[length]["top10_agreement"] = float(np.mean(agreement))
        print(f"history {length}: exact p50 {base_p50:.1f} ms, warm p50 {percentile(warm, 50):.2f} ms, "
              f"top-10 agreement {np.mean(agreement):.2f}", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cooccurrence.npz"
        save_ms = timed(lambda: index.save(path, seq=len(events)))[0]
        load_ms, (loaded, _) = timed(lambda: CoOccurrenceIndex.load(path))
        snapshot_bytes = path.stat().st_size
    rebuild_ms = timed(lambda: build(events))[0]
    assert loaded.history(by_length[1000][0]) == index.history(by_length[1000][0])

    print(table(["history length", "collaborative call", "n", "p50 ms", "p99 ms", "exact p50 / p50"], rows,
                title=f"Collaborative source on a dense log ({len(events)} events, {args.items} items)"))
    other = [["build the index (add every event)", build_ms, ""],
             [f"compute every item's list ({computed} lists)", warm_ms, ""],
             ["memory: sequences and takers (tracemalloc)", log_bytes / 2**20, "MiB"],
             ["memory: every item's list", cache_bytes / 2**20, "MiB"],
             ["snapshot: save", save_ms, ""], ["snapshot: file size", snapshot_bytes / 2**20, "MiB"],
             ["snapshot: load", load_ms, f"{rebuild_ms / load_ms:.3g}x faster than a rebuild"],
             ["rebuild from events in memory (baseline)", rebuild_ms, "no log read counted"]]
    print()
    print(table(["what", "ms / MiB", "note"], other, title="Index build, memory and start-up"))
    audience_rows, audiences = audience_costs(index, args.items, args.calls // 4, rng)
    print()
    print(table(["items in the group", "audience (users)", "call", "p50 ms", "p99 ms", "p50 / baseline p50"],
                audience_rows, title="Interest source: a category's audience, read and cached"))
    payload = {"events": len(events), "items": args.items, "lengths": results, "build_ms": build_ms,
               "warm_all_ms": warm_ms, "lists": computed, "log_bytes": log_bytes, "cache_bytes": cache_bytes,
               "snapshot": {"save_ms": save_ms, "load_ms": load_ms, "bytes": snapshot_bytes, "rebuild_ms": rebuild_ms},
               "audiences": audiences}
    if args.pipeline:
        rows, payload["pipeline"], open_ms = pipeline(events, by_length, args.items, args.calls, args.exact_calls, rng)
        payload["engine_open_ms"] = open_ms
        print()
        print(table(["history length", "recommend (user_id, k=10)", "n", "p50 ms", "p99 ms", "exact p50 / p50"], rows,
                    title="Whole recommendations through an Engine on the same log"))
        print(f"\nEngine.open on this log (the event log read into the index, no snapshot): {open_ms:.0f} ms")
    print(f"\nwrote {save('dense_log', payload)}")


if __name__ == "__main__":
    main()
