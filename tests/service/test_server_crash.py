"""A real `hybridrec serve` under concurrent event and item writes, killed with SIGKILL mid-stream
and restarted: every acknowledged write is there exactly once, nothing unsent appeared, and the
restarted server's profiles and recommendations reflect the acknowledged events.

Each event client sends its own deterministic sequence, one event per request and one request at a
time, so the log's events of that client must be exactly the acknowledged prefix of the sequence,
plus at most the one request that was in flight when the server died (committed, but its answer
was lost)."""

import json
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from retrieval.engine import Engine, EngineConfig
from retrieval.state.profiles import PROFILES_SEQ
from retrieval.storage.vector_store import scroll_all
from service.cli import demo_catalogue_path
from tests.service.serve_process import ServeProcess

pytestmark = pytest.mark.slow

EVENT_CLIENTS = 4
ITEM_CLIENTS = 2
ITEMS_PER_PUT = 3
KILL_AFTER_EVENTS = 300  # acknowledged events before the kill (at least)
KILL_AFTER_ITEMS = 24  # acknowledged items before the kill (at least)
AFTER_FLUSH_EVENTS = 100  # acknowledged events after a durable profile flush was seen
TASTE_ITEMS = 8  # a taste user's clicks cycle through this many items of its category
TASTE_TYPES = ("click", "add_to_cart", "purchase", "like")
TASTE_WORDS = {"Keyboards": "quiet mechanical keyboard", "Mice": "ergonomic wireless mouse",
               "Desk Lamps": "dimmable desk lamp", "Pens": "fine gel pens"}


class Server(ServeProcess):
    """`hybridrec serve --demo` on the test's data directory; ``kill`` is SIGKILL to its whole
    process group: no shutdown hooks, no flush on exit."""

    def __init__(self, data_dir, log_path):
        super().__init__(["--demo", "--data-dir", str(data_dir)], log_path)


@dataclass
class Client:
    """One client's writes: what it sent (in order), how many of them were acknowledged, and
    whether one more was in flight when the connection broke."""

    sent: list = field(default_factory=list)
    acked: int = 0
    in_flight: bool = False
    error: str | None = None  # a failure while the server was alive


def event_sequence(c: int, n: int, categories: dict[str, list[str]], demo_ids: list[str]) -> dict:
    """Client ``c``'s ``n``-th event: a click by a user of its own, a search by the client's taste
    user, or a positive event of the taste user on an item of the taste category."""
    taste = list(TASTE_WORDS)[c % len(TASTE_WORDS)]
    ids = {"event_id": f"c{c}-e{n}"}  # sent again after a lost answer, it is logged once
    if n % 3 == 0:
        return {"user_id": f"c{c}-u{n}", "type": "click", "item_id": demo_ids[(c * 37 + n) % len(demo_ids)], **ids}
    if n % 3 == 1:
        return {"user_id": f"c{c}-taste", "type": "search", "query": f"{TASTE_WORDS[taste]} no. {n}", **ids}
    return {"user_id": f"c{c}-taste", "type": TASTE_TYPES[n % len(TASTE_TYPES)],
            "item_id": categories[taste][(n // 3) % TASTE_ITEMS], **ids}


def run_event_client(base: str, c: int, me: Client, stop: threading.Event, killed: threading.Event,
                     categories, demo_ids) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        n = 0
        while not stop.is_set():
            event = event_sequence(c, n, categories, demo_ids)
            try:
                r = http.post("/v1/events", json={"events": [event]})
            except httpx.TransportError as err:
                me.sent.append(event)
                me.in_flight = True
                if not killed.is_set():
                    me.error = f"event {n}: {err!r}"
                return
            if r.status_code in (429, 503):  # refused before anything was queued: send it again
                time.sleep(0.05)
                continue
            if r.status_code != 200 or r.json() != {"accepted": 1, "rejected": [], "duplicates": 0}:
                me.error = f"event {n}: {r.status_code} {r.text[:300]}"
                return
            me.sent.append(event)
            me.acked += 1
            n += 1


def run_item_client(base: str, c: int, me: Client, stop: threading.Event, killed: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        n = 0
        while not stop.is_set():
            batch = [{"id": f"crash-c{c}-i{n}-{j}", "title": f"Bamboo desk organiser, model {c}-{n}-{j}",
                      "brand": "Crashtest", "categories": ["Office", "Organisers"], "price": 10 + j}
                     for j in range(ITEMS_PER_PUT)]
            try:
                r = http.put("/v1/items", json={"items": batch})
            except httpx.TransportError as err:
                me.sent.append(batch)
                me.in_flight = True
                if not killed.is_set():
                    me.error = f"items {n}: {err!r}"
                return
            if r.status_code in (429, 503):
                time.sleep(0.05)
                continue
            if r.status_code != 200 or r.json() != {"upserted": ITEMS_PER_PUT, "rejected": []}:
                me.error = f"items {n}: {r.status_code} {r.text[:300]}"
                return
            me.sent.append(batch)
            me.acked += 1
            n += 1


def read_log(path) -> tuple[list[tuple], int, int, int]:
    """The log's events (user, type, item, query) in commit order, the last event's number, the
    newest number of any change, and the position up to which stored profiles are durable;
    read-only, beside a running server."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT user_id, type, item_id, query FROM events ORDER BY seq").fetchall()
        last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        head = conn.execute("SELECT seq FROM head").fetchone()[0]
        meta = conn.execute("SELECT value FROM meta WHERE key = ?", (PROFILES_SEQ,)).fetchone()
        return rows, last, head, int(meta[0]) if meta else 0
    finally:
        conn.close()


def profiles_seq(path) -> int:
    """The log position up to which stored profiles are durable (0 before the first flush)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (PROFILES_SEQ,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # busy right now: ask again on the next poll
        return 0
    return int(row[0]) if row else 0


def as_row(event: dict) -> tuple:
    return event["user_id"], event["type"], event.get("item_id"), event.get("query")


def test_server_killed_under_concurrent_writes_keeps_every_acknowledged_write_once(tmp_path, encoder):
    with open(demo_catalogue_path(), encoding="utf-8") as fh:
        demo = [json.loads(line) for line in fh]
    demo_ids = [d["id"] for d in demo]
    categories: dict[str, list[str]] = {}
    for d in demo:
        categories.setdefault(d["categories"][-1], []).append(d["id"])
    data_dir = tmp_path / "data"
    events_db = data_dir / "events.sqlite3"
    server_log = tmp_path / "server.log"

    event_clients = [Client() for _ in range(EVENT_CLIENTS)]
    item_clients = [Client() for _ in range(ITEM_CLIENTS)]
    stop, killed = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    server = Server(data_dir, server_log)
    try:
        for c, me in enumerate(event_clients):
            threads.append(threading.Thread(target=run_event_client, daemon=True,
                                            args=(server.base, c, me, stop, killed, categories, demo_ids)))
        for c, me in enumerate(item_clients):
            threads.append(threading.Thread(target=run_item_client, daemon=True,
                                            args=(server.base, c, me, stop, killed)))
        for t in threads:
            t.start()

        # Kill once enough is acknowledged and a durable profile round has moved the synced log
        # position, with more events acknowledged after it: the restart must then repair profiles
        # from the middle of the log, not from its start.
        deadline = time.monotonic() + 240
        events_at_flush = None
        while True:
            errors = [me.error for me in event_clients + item_clients if me.error]
            assert not errors, f"a client failed while the server was up: {errors}\n{server.output()}"
            assert server.proc.poll() is None, f"the server died by itself: {server.output()}"
            assert time.monotonic() < deadline, (
                f"in 240 s: {[me.acked for me in event_clients]} events and {[me.acked for me in item_clients]} item "
                f"batches acknowledged; a durable profile flush seen after {events_at_flush} events (None: never)")
            events = sum(me.acked for me in event_clients)
            items = sum(me.acked for me in item_clients) * ITEMS_PER_PUT
            if events_at_flush is None and profiles_seq(events_db) > 0:
                events_at_flush = events
            if (events >= KILL_AFTER_EVENTS and items >= KILL_AFTER_ITEMS and events_at_flush is not None
                    and events >= events_at_flush + AFTER_FLUSH_EVENTS):
                break
            time.sleep(0.05)
        assert all(t.is_alive() for t in threads), "every client is still sending at the kill"
        killed.set()
        server.kill()
        assert server.proc.returncode == -signal.SIGKILL
    finally:
        stop.set()
        killed.set()
        server.kill()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not [me.error for me in event_clients + item_clients if me.error]

    acked_items = {item["id"]: item for me in item_clients for batch in me.sent[:me.acked] for item in batch}
    sent_items = {item["id"] for me in item_clients for batch in me.sent for item in batch}
    assert len(acked_items) >= KILL_AFTER_ITEMS

    again = Server(data_dir, server_log)
    try:
        # The log, read-only beside the restarted server: each client's events are exactly its
        # acknowledged prefix, or that plus the one request in flight at the kill; none twice.
        rows, last_seq, head, synced = read_log(events_db)
        by_client: dict[int, list[tuple]] = {}
        for row in rows:
            by_client.setdefault(int(row[0].split("-")[0][1:]), []).append(row)
        assert set(by_client) <= set(range(EVENT_CLIENTS))
        for c, me in enumerate(event_clients):
            logged = by_client.get(c, [])
            acked = [as_row(e) for e in me.sent[:me.acked]]
            allowed = [acked] + ([acked + [as_row(me.sent[me.acked])]] if me.in_flight else [])
            assert logged in allowed, (
                f"client {c}: {me.acked} acknowledged events, {len(logged)} logged; first difference at "
                f"{next((i for i, (a, b) in enumerate(zip(logged, acked)) if a != b), min(len(logged), len(acked)))}")
        # The restart repaired every profile behind the log: its position is past the last event (item
        # writes take numbers of the same sequence, so it may be past that too).
        assert last_seq <= synced <= head

        with httpx.Client(base_url=again.base, timeout=30) as http:
            ready = http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["ready"] and ready.json()["profile_lag"] == 0
            health = http.get("/health").json()
            assert health["events"] == len(rows)
            assert len(acked_items) + len(demo) <= health["items"] <= len(sent_items) + len(demo)

            for item_id, item in acked_items.items():
                r = http.get(f"/v1/items/{item_id}")
                assert r.status_code == 200, f"acknowledged item {item_id} is gone: {r.text}"
                assert r.json()["title"] == item["title"]

            for c, me in enumerate(event_clients):
                logged = by_client.get(c, [])
                singles = {e["user_id"] for e in me.sent[:me.acked] if e["user_id"] != f"c{c}-taste"}
                for user_id in singles:
                    user = http.get(f"/v1/users/{user_id}")
                    assert user.status_code == 200, f"acknowledged user {user_id} is gone"
                    assert user.json()["total_events"] == 1 and user.json()["has_profile"]
                taste_user = f"c{c}-taste"
                taste_rows = [r for r in logged if r[0] == taste_user]
                user = http.get(f"/v1/users/{taste_user}").json()
                assert user["total_events"] == len(taste_rows) and user["has_profile"]
                last_item = next(r[2] for r in reversed(taste_rows) if r[2])
                assert user["recent_items"][0] == last_item
                # The profile follows the events: recommendations come from the taste category.
                category = list(TASTE_WORDS)[c % len(TASTE_WORDS)]
                rec = http.post("/v1/recommendations", json={"user_id": taste_user, "k": 10})
                assert rec.status_code == 200, rec.text
                in_category = [i for i in rec.json()["items"] if i["categories"][-1] == category]
                assert len(in_category) >= 7, (taste_user, [i["categories"] for i in rec.json()["items"]])

            # Each client whose answer was lost sends that request again, with its event id: the
            # event is logged exactly once, whether or not the first send had committed.
            for me in event_clients:
                if me.in_flight:
                    r = http.post("/v1/events", json={"events": [me.sent[me.acked]]})
                    assert r.status_code == 200, r.text
                    assert r.json()["accepted"] + r.json()["duplicates"] == 1 and not r.json()["rejected"]
            resent, _, _, _ = read_log(events_db)
            for c, me in enumerate(event_clients):
                assert [r for r in resent if int(r[0].split("-")[0][1:]) == c] == [as_row(e) for e in me.sent]
    finally:
        again.kill()

    # Offline, on the same data directory: every item once, and every user's stored profile is the
    # one its logged events give (the restart repaired the profiles the kill left behind).
    engine = Engine.open(EngineConfig(data_dir=data_dir), encoder=encoder)
    try:
        stored = [p.payload["id"] for page in scroll_all(engine.store, engine.catalogue.collection) for p in page]
        assert len(stored) == len(set(stored)) == engine.catalogue.count()
        assert set(acked_items) <= set(stored) <= set(demo_ids) | sent_items
        assert set(demo_ids) <= set(stored)

        now = time.time()
        users = sorted({row[0] for row in rows})
        engine.profiles.texts.warm([row[3] for row in rows if row[3]])  # the searches, encoded in one batch
        for user_id in users:
            assert user_id not in engine.profiles.stale
            have = engine.profiles.vector(user_id)
            assert have is not None, f"{user_id} has logged events but no stored profile"
            want = engine.profiles.compute(engine.log.user_events(user_id, limit=engine.profiles.config.max_events),
                                           engine.log.preferences(user_id), now)
            cosine = float(np.dot(have, want) / (np.linalg.norm(have) * np.linalg.norm(want)))
            assert cosine > 0.9999, f"{user_id}'s stored profile is not the one its logged events give ({cosine:.6f})"
    finally:
        engine.close()
