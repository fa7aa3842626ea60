"""Storage and scale: bytes per item, event and user in each store; an instance's start-up time and
peak memory against the size of the event log; dense search time against the size of the catalogue
(issue 22, "Measured (benchmark, not tests)", and the figures docs/capacity.md is built on).

Everything is synthetic and written through the engine's own storage classes: items are random
384-d float32 vectors with short payloads (``Item.payload()``) and Qdrant's BM25 of their text,
written with ``EventLog.put_items`` and ``EdgeVectorStore.upsert`` (encoding text with the real
model would take hours on a CPU, and the bytes and the search do not depend on what the vectors
mean); events go through ``EventLog.append``; users get stated preferences
(``EventLog.set_preferences``), a profile salt and a profile vector.

Parts (``--parts``, all by default):
- ``bytes``: --items items, --events events over --users users, and those users' preferences and
  profiles, in the SQLite file (``dbstat``, per table and index), in PostgreSQL
  (``pg_total_relation_size`` per table after ``VACUUM ANALYZE``) and in the embedded Qdrant
  collections folder (disk blocks, after ``optimize``), each divided by its rows.
- ``startup``: a data directory per size of --startup-events (0, the baseline, is always run), each
  opened by ``Engine.open`` in a new process (the encoder loaded first and timed apart), with that
  process's peak RSS; and, in processes of their own, the co-occurrence index built from the log
  (``CoOccurrenceIndex.add`` over every positive event) against ``CoOccurrenceIndex.load`` of its
  snapshot. On SQLite, and on PostgreSQL with --startup-backends sqlite,postgres.
- ``dense``: --dense-items random items per size in a new process, HNSW built (``optimize``), then
  --queries random query vectors through ``EdgeVectorStore.search_dense`` (limit 100, the pipeline's
  pool), without a filter and with a category filter (1 of 20 categories) and a brand filter (1 of
  200 brands); p50/p99, build time, peak RSS, folder size.

Every row carries the 1-minute load average and the cores other processes used meanwhile: the
machine's cores are shared.

    python benchmarks/storage_scale.py [--parts bytes,startup,dense] [--items 10000] [--events 100000]
        [--users 10000] [--startup-events 100000,1000000] [--startup-backends sqlite]
        [--dense-items 10000,100000] [--queries 300] [--no-save]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, save, table  # noqa: E402
from benchmarks.load import git_commit, machine_cpu_seconds  # noqa: E402
from encoders import item_text  # noqa: E402
from retrieval.state.bm25 import Bm25Encoder  # noqa: E402
from retrieval.state.catalogue import items_spec  # noqa: E402
from retrieval.state.cooccurrence import POSITIVE_TYPES, CoOccurrenceIndex  # noqa: E402
from retrieval.storage.edge import EdgeVectorStore  # noqa: E402
from retrieval.storage.event_log import EventLog  # noqa: E402
from retrieval.storage.layout import ITEMS, USERS  # noqa: E402
from retrieval.storage.records import ParsedEvent, parse_item  # noqa: E402
from retrieval.storage.sqlite_log import SqliteEventLog  # noqa: E402
from retrieval.storage.vector_store import CollectionSpec, ItemFilter, StoredPoint  # noqa: E402

DIM = 384
CATEGORIES = 20  # a category filter keeps ~5% of the catalogue
BRANDS = 200  # a brand filter keeps ~0.5%
EVENT_TYPES = ("view", "view", "view", "click", "click", "add_to_cart", "purchase")  # views most often
DAY_S = 86_400.0
SEARCH_LIMIT = 100  # RecommendConfig.min_pool: what a dense source asks the store for
WRITE_BATCH = 10_000  # events per EventLog.append (one transaction)
PROFILE_PAYLOAD = {"n_events": 10, "updated": 0.0}  # what Profiles stores beside a profile vector


# --- synthetic data -----------------------------------------------------------------------------


def item_id(n: int) -> str:
    return f"sku-{n:08d}"


def user_id(n: int) -> str:
    return f"user-{n:08d}"


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random directions in 384 dimensions, float32, unit length (cosine space)."""
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def item_payload(n: int, rng: np.random.Generator) -> dict:
    """A short item, as the catalogue stores it (``Item.payload()``: the lower-cased filter keys too)."""
    words = ["quiet", "wireless", "ergonomic", "compact", "stapler", "desk", "lamp", "pen", "binder", "chair",
             "keyboard", "notebook", "label", "printer", "paper", "folder", "marker", "shelf", "tape", "clip"]
    title = " ".join(rng.choice(words, size=4)) + f" {n}"
    return parse_item({
        "id": item_id(n), "title": title, "description": f"A {title} for the office, model {n % 997}.",
        "brand": f"Brand {n % BRANDS}", "categories": ["Office Products", f"Category {n % CATEGORIES}"],
        "price": float(round(rng.uniform(1, 500), 2))}).payload()


def synthetic_items(n: int, rng: np.random.Generator, bm25: Bm25Encoder | None, first: int = 0) -> list[StoredPoint]:
    """Items ``first .. first + n - 1`` with random vectors, and BM25 vectors of their text where
    ``bm25`` is given."""
    return points_with_random_vectors([item_payload(first + k, rng) for k in range(n)], rng, bm25)


def points_with_random_vectors(payloads: list[dict], rng: np.random.Generator,
                               bm25: Bm25Encoder | None) -> list[StoredPoint]:
    """Stored items (``Item.payload()``) with random unit vectors in the encoder's place, and the
    BM25 of their text where ``bm25`` is given."""
    vectors = random_unit_vectors(rng, len(payloads))
    sparse = bm25.encode_documents([item_text(p) for p in payloads]) if bm25 else [None] * len(payloads)
    return [StoredPoint(p["id"], p, v, s) for p, v, s in zip(payloads, vectors, sparse)]


def synthetic_events(n: int, users: int, items: int, rng: np.random.Generator, start: float) -> list[ParsedEvent]:
    """``n`` events of ``users`` users on ``items`` items, popular items more often (Zipf-like: the
    item of rank r is taken in proportion to 1 / (r + 10)), over 90 days from ``start``."""
    weights = 1.0 / (np.arange(items) + 10.0)
    item_codes = rng.choice(items, size=n, p=weights / weights.sum())
    user_codes = rng.integers(0, users, size=n)
    types = rng.integers(0, len(EVENT_TYPES), size=n)
    times = start + np.sort(rng.uniform(0, 90 * DAY_S, size=n))
    return [ParsedEvent(user_id(int(u)), EVENT_TYPES[t], item_id(int(i)), None, None, float(ts))
            for u, t, i, ts in zip(user_codes.tolist(), types.tolist(), item_codes.tolist(), times.tolist())]


def append_events(log: EventLog, n: int, users: int, items: int, seed: int) -> float:
    """``n`` synthetic events through ``EventLog.append`` in transactions of WRITE_BATCH; seconds taken."""
    rng = np.random.default_rng(seed)
    taken = 0.0
    for first in range(0, n, WRITE_BATCH):
        batch = synthetic_events(min(WRITE_BATCH, n - first), users, items, rng, start=1.7e9 + first)
        started = time.perf_counter()
        log.append(batch)
        taken += time.perf_counter() - started
    return taken


def store_users(log: EventLog, n: int) -> None:
    """``n`` users with stated preferences (one transaction each, as the API writes them) and a profile salt."""
    for u in range(n):
        log.set_preferences(user_id(u), "quiet wireless keyboards for a small desk", {"size": "small"}, 1.7e9)
    for first in range(0, n, 1000):
        log.profile_salts([user_id(u) for u in range(first, min(n, first + 1000))])


def profile_points(n: int, rng: np.random.Generator) -> list[StoredPoint]:
    """Profile vectors under salted-hash-like ids, as ``Profiles`` stores them."""
    vectors = random_unit_vectors(rng, n)
    return [StoredPoint("profile:" + hashlib.sha256(rng.bytes(16)).hexdigest(), dict(PROFILE_PAYLOAD), vectors[k])
            for k in range(n)]


# --- measuring the machine and a process --------------------------------------------------------


class MachineLoad:
    """The load average and the cores the whole machine used over a stretch of time."""

    def __init__(self) -> None:
        self.cpu, self.wall = machine_cpu_seconds(), time.perf_counter()

    def report(self, own_cpu_s: float = 0.0) -> dict:
        """The machine's busy cores over the stretch, less ``own_cpu_s`` (what the measured work used)."""
        wall = time.perf_counter() - self.wall
        busy = (machine_cpu_seconds() - self.cpu) / wall if wall > 0 else float("nan")
        return {"load_average_1m": os.getloadavg()[0], "machine_cores_busy": busy,
                "other_processes_cores_busy": max(0.0, busy - own_cpu_s / wall) if wall > 0 else float("nan")}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_bytes(path: Path) -> int:
    """What a folder (or file) takes on disk: allocated blocks, not apparent sizes (Qdrant's
    memory-mapped files are sparse)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def child(mode: str, *args: str) -> dict:
    """Run this script as ``--child MODE ARGS`` in a new process (clean memory numbers); its JSON."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, *args], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "HYBRIDREC_LOG_LEVEL": "warning"})
    if out.returncode != 0:
        raise RuntimeError(f"child {mode} {args} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- part 1: bytes per row ----------------------------------------------------------------------


def sqlite_table_bytes(path: Path) -> dict[str, int]:
    """Bytes of each table and index of a SQLite file (the ``dbstat`` virtual table)."""
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())


def postgres_table_bytes(url: str) -> dict[str, dict[str, int]]:
    """Heap, index and total (with TOAST) bytes of each hybridrec table, after VACUUM ANALYZE."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute(
            "SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'").fetchall()
    return {name: {"heap": heap, "indexes": idx, "total": total} for name, heap, idx, total in rows}


def fill_log(log: EventLog, items: list[StoredPoint], events: int, users: int, seed: int) -> dict:
    """The same items, events and users in a log; seconds each took."""
    started = time.perf_counter()
    for first in range(0, len(items), 1000):
        log.put_items(ITEMS, items[first:first + 1000])
    items_s = time.perf_counter() - started
    events_s = append_events(log, events, users, len(items), seed)
    started = time.perf_counter()
    store_users(log, users)
    return {"items_s": items_s, "events_s": events_s, "events_per_s": events / events_s if events_s else 0.0,
            "users_s": time.perf_counter() - started}


SQLITE_ROWS = {"items": ("items", "sqlite_autoindex_items_1", "items_seq"),
               "events": ("events", "events_user", "events_item"),
               "users": ("users", "sqlite_autoindex_users_1", "users_seq", "profile_keys",
                         "sqlite_autoindex_profile_keys_1")}
POSTGRES_ROWS = {"items": ("items",), "events": ("events",), "users": ("users", "profile_keys")}


def per_row(sizes: dict[str, int], groups: dict[str, tuple[str, ...]], counts: dict[str, int]) -> dict[str, float]:
    """Bytes per item, event and user: the tables and indexes of each, over its rows."""
    return {kind: sum(sizes.get(name, 0) for name in names) / counts[kind] for kind, names in groups.items()}


def measure_sqlite_bytes(workdir: Path, items: list[StoredPoint], counts: dict[str, int], seed: int) -> dict:
    path = workdir / "events.sqlite3"
    log = SqliteEventLog(path)
    load = MachineLoad()
    timings = fill_log(log, items, counts["events"], counts["users"], seed)
    log.close()  # the last connection's close checkpoints the WAL into the file
    sizes = sqlite_table_bytes(path)
    return {"file_bytes": path.stat().st_size, "tables": sizes, "per_row": per_row(sizes, SQLITE_ROWS, counts),
            "write": timings, **load.report()}


def measure_postgres_bytes(url: str, items: list[StoredPoint], counts: dict[str, int], seed: int) -> dict:
    from retrieval.storage.postgres_log import PostgresEventLog

    log = PostgresEventLog(url)
    load = MachineLoad()
    timings = fill_log(log, items, counts["events"], counts["users"], seed)
    log.close()
    tables = postgres_table_bytes(url)
    totals = {name: t["total"] for name, t in tables.items()}
    return {"tables": tables, "per_row": per_row(totals, POSTGRES_ROWS, counts), "write": timings, **load.report()}


def measure_qdrant_bytes(workdir: Path, items: list[StoredPoint], users: int, seed: int) -> dict:
    """The items and users collections of an embedded Qdrant, optimised, against empty ones."""
    empty = EdgeVectorStore(workdir / "empty")
    empty.ensure_collection(items_spec(DIM))
    empty.ensure_collection(CollectionSpec(USERS, DIM, keyword_indexes=("id",)))
    empty.close()
    store = EdgeVectorStore(workdir / "collections")
    store.ensure_collection(items_spec(DIM))
    store.ensure_collection(CollectionSpec(USERS, DIM, keyword_indexes=("id",)))
    load = MachineLoad()
    started = time.perf_counter()
    for first in range(0, len(items), 1000):
        store.upsert(ITEMS, items[first:first + 1000], durable=False)
    profiles = profile_points(users, np.random.default_rng(seed))
    for first in range(0, len(profiles), 1000):
        store.upsert(USERS, profiles[first:first + 1000], durable=False)
    upsert_s = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize(ITEMS)
    store.optimize(USERS)
    optimize_s = time.perf_counter() - started
    store.close()
    out = {"upsert_s": upsert_s, "optimize_s": optimize_s, **load.report()}
    for name, rows in ((ITEMS, len(items)), (USERS, users)):
        full, base = disk_bytes(workdir / "collections" / name), disk_bytes(workdir / "empty" / name)
        out[name] = {"bytes": full, "empty_collection_bytes": base, "per_row": (full - base) / rows}
    return out


def measure_bytes(items: int, events: int, users: int, seed: int = 0) -> dict:
    """Part ``bytes``: the same data in the SQLite file, in PostgreSQL and in Qdrant."""
    from tests.postgres_server import PostgresServer

    rng = np.random.default_rng(seed)
    print(f"bytes: {items} items, {events} events, {users} users", flush=True)
    points = synthetic_items(items, rng, Bm25Encoder())
    counts = {"items": items, "events": events, "users": users}
    with tempfile.TemporaryDirectory(prefix="hybridrec-bytes-") as scratch:
        workdir = Path(scratch)
        print("  sqlite", flush=True)
        sqlite = measure_sqlite_bytes(workdir, points, counts, seed)
        print("  qdrant", flush=True)
        qdrant = measure_qdrant_bytes(workdir, points, users, seed)
    print("  postgresql", flush=True)
    pg = PostgresServer.start()
    try:
        postgres = measure_postgres_bytes(pg.create_database("bytes"), points, counts, seed)
    finally:
        pg.stop()
    return {"counts": counts, "sqlite": sqlite, "postgres": postgres, "qdrant": qdrant}


# --- part 2: start-up against the log's size ----------------------------------------------------

STARTUP_ITEMS = 10_000  # the catalogue the events are on (constant across sizes)
EVENTS_PER_USER = 20


def prepare_data_dir(data_dir: Path, events: int, database_url: str | None, seed: int) -> dict:
    """A data directory as a cleanly stopped instance leaves it: STARTUP_ITEMS items in the record
    and the vector index, ``events`` events (EVENTS_PER_USER per user), profiles and index current
    (so that ``Engine.open`` repairs and re-indexes nothing), for ``database_url`` or SQLite."""
    from retrieval.engine import INDEX_SEQ, PROFILE_IDS, SALTED
    from retrieval.state.profiles import PROFILES_SEQ
    from retrieval.storage.event_log import open_event_log

    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    log = open_event_log(database_url, data_dir)
    store = EdgeVectorStore(data_dir / "collections")
    store.ensure_collection(items_spec(DIM))
    store.ensure_collection(CollectionSpec(USERS, DIM, keyword_indexes=("id",)))
    points = synthetic_items(STARTUP_ITEMS, rng, bm25=None)
    for first in range(0, len(points), 1000):
        log.put_items(ITEMS, points[first:first + 1000])
        store.upsert(ITEMS, points[first:first + 1000], durable=False)
    store.optimize(ITEMS)
    store.close()
    append_s = append_events(log, events, max(1, events // EVENTS_PER_USER), STARTUP_ITEMS, seed)
    name = ""
    if database_url:  # an instance's positions in a shared record are kept under its own name
        name = uuid.uuid4().hex
        (data_dir / "instance-id").write_text(name)
    suffix = f":{name}" if name else ""
    log.set_meta(PROFILES_SEQ + suffix, str(log.max_seq()))
    log.set_meta(INDEX_SEQ + suffix, str(log.head()))
    log.set_meta(PROFILE_IDS, SALTED)
    log.close()
    return {"append_s": append_s}


def child_open(data_dir: str, database_url: str) -> dict:
    """In a new process: the encoder loaded, then ``Engine.open`` on the data directory (with the
    co-occurrence snapshot an earlier close left there, if any), then ``close`` (which saves one)."""
    from encoders import BiEncoder
    from retrieval.engine import Engine, EngineConfig

    had_snapshot = any(Path(data_dir).rglob("cooccurrence*.npz"))
    baseline_rss = current_rss_mb()
    started = time.perf_counter()
    encoder = BiEncoder(device="cpu")
    encoder_s = time.perf_counter() - started
    rss_with_encoder = current_rss_mb()
    load = MachineLoad()
    cpu = time.process_time()
    started = time.perf_counter()
    engine = Engine.open(EngineConfig(data_dir=Path(data_dir), database_url=database_url or None, device="cpu"),
                         encoder=encoder)
    open_s = time.perf_counter() - started
    open_cpu = time.process_time() - cpu
    result = {"encoder_load_s": encoder_s, "open_s": open_s, "rss_after_imports_mb": baseline_rss,
              "rss_with_encoder_mb": rss_with_encoder, "rss_after_open_mb": current_rss_mb(),
              "peak_rss_mb": peak_rss_mb(), "events": engine.log.count(), "had_snapshot": had_snapshot,
              **load.report(open_cpu)}
    started = time.perf_counter()
    engine.close()
    result["close_s"] = time.perf_counter() - started
    return result


def logged_pairs(data_dir: str, database_url: str) -> list[tuple[str, str]]:
    """Every (user, item) of a positive event, in log order, as Engine.open reads them."""
    from retrieval.storage.event_log import open_event_log

    log = open_event_log(database_url or None, data_dir)
    try:
        return [(e.user_id, e.item_id) for e in log.iter_events()
                if e.item_id is not None and e.type in POSITIVE_TYPES]
    finally:
        log.close()


def child_build(data_dir: str, database_url: str, snapshot: str) -> dict:
    """In a new process: the log read, the co-occurrence index built from it, its snapshot saved."""
    rss_start = current_rss_mb()
    load = MachineLoad()
    cpu = time.process_time()
    started = time.perf_counter()
    pairs = logged_pairs(data_dir, database_url)
    read_s = time.perf_counter() - started
    rss_pairs = current_rss_mb()
    index = CoOccurrenceIndex()
    started = time.perf_counter()
    for user, item in pairs:
        index.add(user, item)
    build_s = time.perf_counter() - started
    del pairs
    gc.collect()
    rss_index = current_rss_mb()
    started = time.perf_counter()
    index.save(snapshot, seq=0)
    save_s = time.perf_counter() - started
    return {"read_log_s": read_s, "build_s": build_s, "save_s": save_s, "snapshot_bytes": Path(snapshot).stat().st_size,
            "rss_start_mb": rss_start, "rss_with_pairs_mb": rss_pairs, "rss_with_index_mb": rss_index,
            "peak_rss_mb": peak_rss_mb(),
            **load.report(time.process_time() - cpu)}


def child_load(snapshot: str) -> dict:
    """In a new process: the co-occurrence index loaded from its snapshot."""
    baseline_rss = current_rss_mb()
    load = MachineLoad()
    cpu = time.process_time()
    started = time.perf_counter()
    loaded = CoOccurrenceIndex.load(snapshot)
    load_s = time.perf_counter() - started
    if loaded is None:
        raise RuntimeError(f"the snapshot {snapshot} did not load")
    return {"load_s": load_s, "rss_before_mb": baseline_rss, "rss_with_index_mb": current_rss_mb(),
            "peak_rss_mb": peak_rss_mb(), **load.report(time.process_time() - cpu)}


def engine_open_reads_snapshot() -> bool:
    """Whether Engine.open loads a co-occurrence snapshot at this commit (else it rebuilds from the log)."""
    from retrieval.engine import Engine

    return "CoOccurrenceIndex.load" in inspect.getsource(Engine)


@contextmanager
def database_for(backend: str) -> Iterator:
    """A function giving a fresh database URL per name for PostgreSQL, or one giving None for SQLite."""
    if backend == "sqlite":
        yield lambda name: None
        return
    from tests.postgres_server import PostgresServer

    pg = PostgresServer.start()
    try:
        yield pg.create_database
    finally:
        pg.stop()


def measure_startup(sizes: list[int], backends: list[str], seed: int = 0) -> dict:
    """Part ``startup``: per back-end and log size, Engine.open and the co-occurrence index."""
    rows = []
    for backend in backends:
        with database_for(backend) as new_database, tempfile.TemporaryDirectory(prefix="hybridrec-start-") as scratch:
            for events in [0, *sorted(set(sizes) - {0})]:
                print(f"startup: {backend}, {events} events", flush=True)
                url = new_database(f"startup_{events}") or ""
                data_dir = Path(scratch) / f"log-{events}"
                prepared = prepare_data_dir(data_dir, events, url or None, seed)
                snapshot = str(Path(scratch) / f"cooccurrence-{events}.npz")
                rows.append({"backend": backend, "events": events, "prepare": prepared,
                             "open": child("open", str(data_dir), url),  # no snapshot yet: the whole log
                             "reopen": child("open", str(data_dir), url),  # the snapshot the first close saved
                             "build": child("build", str(data_dir), url, snapshot),
                             "load": child("load", snapshot)})
    return {"items": STARTUP_ITEMS, "events_per_user": EVENTS_PER_USER,
            "engine_open_reads_snapshot": engine_open_reads_snapshot(), "rows": rows}


# --- part 3: dense search against the catalogue's size ------------------------------------------


def timed_searches(store: EdgeVectorStore, queries: np.ndarray, flt: ItemFilter | None) -> list[float]:
    latencies = []
    for vector in queries:
        started = time.perf_counter()
        store.search_dense(ITEMS, vector, SEARCH_LIMIT, flt)
        latencies.append(1000 * (time.perf_counter() - started))
    return latencies


def child_dense(items: str, queries: str, workdir: str) -> dict:
    """In a new process: ``items`` random items indexed (HNSW), then ``queries`` searches of each kind."""
    n, q = int(items), int(queries)
    rng = np.random.default_rng(n)
    rss_start = current_rss_mb()
    store = EdgeVectorStore(Path(workdir) / "collections")
    store.ensure_collection(items_spec(DIM))
    load = MachineLoad()
    cpu = time.process_time()
    started = time.perf_counter()
    for first in range(0, n, 2000):
        store.upsert(ITEMS, synthetic_items(min(2000, n - first), rng, bm25=None, first=first), durable=False)
    store.flush(ITEMS)
    upsert_s = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize(ITEMS)
    optimize_s = time.perf_counter() - started
    build = load.report(time.process_time() - cpu)
    rss_built = current_rss_mb()
    query_vectors = random_unit_vectors(rng, q)
    timed_searches(store, query_vectors[:20], None)  # first searches map the segments in
    searches = {}
    for name, flt in (("none", None), ("category (1 of 20)", ItemFilter(categories=("Category 3",))),
                      ("brand (1 of 200)", ItemFilter(brands=("Brand 7",)))):
        load = MachineLoad()
        cpu = time.process_time()
        latencies = timed_searches(store, query_vectors, flt)
        searches[name] = {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                          "mean_ms": float(np.mean(latencies)), **load.report(time.process_time() - cpu)}
    store.close()
    return {"items": n, "queries": q, "upsert_s": upsert_s, "optimize_s": optimize_s, "build_load": build,
            "rss_start_mb": rss_start, "rss_built_mb": rss_built, "peak_rss_mb": peak_rss_mb(),
            "folder_bytes": disk_bytes(Path(workdir) / "collections"), "searches": searches}


def measure_dense(sizes: list[int], queries: int) -> dict:
    """Part ``dense``: one new process per catalogue size."""
    rows = []
    for n in sorted(sizes):
        print(f"dense: {n} items", flush=True)
        with tempfile.TemporaryDirectory(prefix="hybridrec-dense-") as scratch:
            rows.append(child("dense", str(n), str(queries), scratch))
    return {"limit": SEARCH_LIMIT, "rows": rows}


# --- report -------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def load_cell(r: dict) -> str:
    """Load average and other processes' busy cores, as one cell."""
    return f"{r['load_average_1m']:.2f} / {r['other_processes_cores_busy']:.2f}"


def bytes_table(part: dict) -> str:
    c = part["counts"]
    sq, pg, qd = part["sqlite"], part["postgres"], part["qdrant"]
    rows = [[kind, f"{c[kind]:,}", f"{sq['per_row'][kind]:.0f}", f"{pg['per_row'][kind]:.0f}",
             f"{qd[ITEMS]['per_row']:.0f}" if kind == "items" else (
                 f"{qd[USERS]['per_row']:.0f}" if kind == "users" else "-")]
            for kind in ("items", "events", "users")]
    return table(["row", "rows", "SQLite B/row", "PostgreSQL B/row (tables + indexes + TOAST)",
                  "Qdrant B/row (folder, optimised)"], rows,
                 title=f"Bytes per row (SQLite file {mb(sq['file_bytes'])} MB; load avg / other cores while "
                       f"writing: SQLite {load_cell(sq)}, PostgreSQL {load_cell(pg)}, Qdrant {load_cell(qd)})")


def postgres_tables_table(part: dict) -> str:
    rows = [[name, mb(t["heap"]), mb(t["indexes"]), mb(t["total"])]
            for name, t in sorted(part["postgres"]["tables"].items(), key=lambda kv: -kv[1]["total"])]
    return table(["PostgreSQL table", "heap MB", "indexes MB", "total MB"], rows, title="PostgreSQL by table")


def write_speed_table(part: dict) -> str:
    rows = [[store, f"{part[store]['write']['events_per_s']:,.0f}", f"{part[store]['write']['items_s']:.1f}",
             f"{part[store]['write']['users_s']:.1f}", load_cell(part[store])] for store in ("sqlite", "postgres")]
    return table(["store", f"events/s appended ({WRITE_BATCH:,} per transaction)", "items s", "users s (1 tx each)",
                  "load avg / other cores"], rows, title="Writing the data")


def startup_table(part: dict) -> str:
    rows = []
    for r in part["rows"]:
        o, ro, b, ld = r["open"], r["reopen"], r["build"], r["load"]
        rows.append([r["backend"], f"{r['events']:,}", f"{o['open_s']:.2f}", f"{ro['open_s']:.2f}",
                     f"{o['encoder_load_s']:.1f}", f"{o['peak_rss_mb']:.0f}", f"{ro['peak_rss_mb']:.0f}",
                     f"{o['rss_after_open_mb'] - o['rss_with_encoder_mb']:.0f}", f"{o['close_s']:.2f}",
                     f"{b['read_log_s']:.2f}", f"{b['build_s']:.2f}", f"{b['rss_with_index_mb'] - b['rss_start_mb']:.0f}",
                     mb(b["snapshot_bytes"]), f"{ld['load_s']:.2f}", f"{ld['rss_with_index_mb'] - ld['rss_before_mb']:.0f}",
                     load_cell(o)])
    reads = ("loads the snapshot its last close saved, else reads the whole log"
             if part["engine_open_reads_snapshot"] else "rebuilds the index from the whole log")
    return table(["log", "events", "Engine.open s, no snapshot", "Engine.open s, snapshot", "encoder load s (apart)",
                  "peak RSS MB, no snapshot", "peak RSS MB, snapshot", "open: RSS added MB", "close s", "read log s", "index build s", "index: RSS added MB", "snapshot MB",
                  "snapshot load s", "loaded: RSS added MB", "load avg / other cores (open)"], rows,
                 title=f"Start-up against the log ({part['items']:,} items, {part['events_per_user']} events per "
                       f"user; Engine.open at this commit {reads})")


def dense_table(part: dict) -> str:
    rows = []
    for r in part["rows"]:
        for name, s in r["searches"].items():
            rows.append([f"{r['items']:,}", name, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{r['optimize_s']:.1f}",
                         f"{r['rss_built_mb'] - r['rss_start_mb']:.0f}", mb(r["folder_bytes"]), load_cell(s)])
    return table(["items", "filter", "p50 ms", "p99 ms", "HNSW build s", "RSS added MB (store, built)", "folder MB",
                  "load avg / other cores"], rows,
                 title=f"Dense search (limit {part['limit']}), random 384-d vectors, after optimize()")


def report(results: dict) -> str:
    parts = []
    if "bytes" in results:
        parts += [bytes_table(results["bytes"]), postgres_tables_table(results["bytes"]),
                  write_speed_table(results["bytes"])]
    if "startup" in results:
        parts.append(startup_table(results["startup"]))
    if "dense" in results:
        parts.append(dense_table(results["dense"]))
    return "\n\n".join(parts)


def run(parts: list[str], items: int = 10_000, events: int = 100_000, users: int = 10_000,
        startup_events: list[int] = (100_000, 1_000_000), startup_backends: list[str] = ("sqlite",),
        dense_items: list[int] = (10_000, 100_000), queries: int = 300) -> dict:
    results = {**git_commit(), "cpu_count": os.cpu_count()}
    if "bytes" in parts:
        results["bytes"] = measure_bytes(items, events, users)
    if "startup" in parts:
        results["startup"] = measure_startup(list(startup_events), list(startup_backends))
    if "dense" in parts:
        results["dense"] = measure_dense(list(dense_items), queries)
    return results


CHILDREN = {"open": child_open, "build": child_build, "load": child_load, "dense": child_dense}


def numbers(text: str) -> list[int]:
    return [int(float(n)) for n in text.split(",") if n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=lambda s: s.split(","), default=["bytes", "startup", "dense"],
                        help="comma-separated, of bytes, startup, dense (default: all)")
    parser.add_argument("--items", type=int, default=10_000, help="items for bytes (default: %(default)s)")
    parser.add_argument("--events", type=int, default=100_000, help="events for bytes (default: %(default)s)")
    parser.add_argument("--users", type=int, default=10_000, help="users for bytes (default: %(default)s)")
    parser.add_argument("--startup-events", type=numbers, default=[100_000, 1_000_000],
                        help="log sizes, comma-separated (default: 100000,1000000; 0 always runs)")
    parser.add_argument("--startup-backends", type=lambda s: s.split(","), default=["sqlite"],
                        help="sqlite and/or postgres (default: sqlite)")
    parser.add_argument("--dense-items", type=numbers, default=[10_000, 100_000],
                        help="catalogue sizes, comma-separated (default: 10000,100000)")
    parser.add_argument("--queries", type=int, default=300, help="searches per filter (default: %(default)s)")
    parser.add_argument("--no-save", action="store_true", help="do not write results/storage_scale.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that temporary folders and PostgreSQL go too
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](*args.child[1:])))
        return 0
    unknown = set(args.parts) - {"bytes", "startup", "dense"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    results = run(args.parts, args.items, args.events, args.users, args.startup_events, args.startup_backends,
                  args.dense_items, args.queries)
    print("\n" + report(results))
    if not args.no_save:
        print(f"\nwrote {save('storage_scale', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
