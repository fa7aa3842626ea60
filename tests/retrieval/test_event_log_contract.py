"""The storage interface's contract, run against both back-ends: SQLite and PostgreSQL.

The PostgreSQL cases use a server the test session starts itself (``postgres_server`` in
tests/conftest.py) and skip where the machine has none (CI requires them)."""

import sqlite3
import threading

import numpy as np
import pytest

from retrieval.storage.event_log import open_event_log
from retrieval.storage.records import parse_event
from retrieval.storage.sqlite_log import SqliteEventLog
from retrieval.storage.vector_store import SparseVector, StoredPoint

NOW = 1_800_000_000.0


def ev(user, item, type_="click", **kw):
    return parse_event({"user_id": user, "item_id": item, "type": type_, **kw}, NOW)


@pytest.fixture(params=["sqlite", "postgres"])
def open_log(request, tmp_path):
    """Opens the back-end under test; every call is another connection to the same store, as a
    restarted process or another instance would have."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = None
    opened = []

    def make():
        log = open_event_log(url, tmp_path)
        opened.append(log)
        return log
    yield make
    for log in opened:
        log.close()


def point(item_id, seed, title="x"):
    rng = np.random.default_rng(seed)
    return StoredPoint(item_id, {"id": item_id, "title": title}, rng.standard_normal(8).astype(np.float32),
                       SparseVector([1, 5], [0.5, 1.5]))


def test_events_are_committed_and_visible_to_a_new_connection(open_log):
    log = open_log()
    seqs = log.append([ev("u1", "a"), ev("u1", "b"), ev("u2", "a")])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    other = open_log()
    assert [e.item_id for e in other.user_events("u1")] == ["a", "b"]
    assert [e.item_id for e in other.user_events("u1", limit=1)] == ["b"]
    assert other.event_counts("u1") == {"click": 2}
    assert other.user_item_ids("u1") == {"a", "b"}
    assert other.user_item_ids("u1", types=("purchase",)) == set()
    assert [e.seq for e in other.iter_events(batch=2)] == seqs
    assert [e.seq for e in other.iter_events(after=seqs[0])] == seqs[1:]
    assert other.count() == 3 and other.count(after=seqs[0]) == 2 and other.max_seq() == seqs[-1] == other.head()
    assert other.first_seq("u1") == seqs[0] and other.first_seq("nobody") is None


def test_forget_removes_events_preferences_and_salt_and_leaves_a_tombstone(open_log):
    log = open_log()
    log.append([ev("u1", "a"), ev("u2", "b")])
    log.set_preferences("u1", "fountain pens", {"tier": "gold"}, NOW)
    log.profile_salts(["u1"])
    assert log.preferences("u1").attributes == {"tier": "gold"}
    before = log.head()
    assert log.forget_user("u1") == 1
    assert log.user_events("u1") == [] and log.preferences("u1") is None and log.profile_salt("u1") is None
    assert [e.user_id for e in log.iter_events()] == ["u2"]
    assert set(log.user_ids()) == {"u2"}
    changes = log.changes_after(before)
    assert changes.forgotten == [(before + 1, log.user_key("u1"))]
    assert "u1" not in log.user_key("u1") and log.user_key("u1") != log.user_key("u2")
    assert open_log().user_key("u1") == log.user_key("u1")  # the same digest for every instance
    assert log.forget_user("u1") == 0 and log.head() == before + 1  # nothing left: no second tombstone


def test_an_event_sent_again_with_its_event_id_is_logged_once(open_log):
    log = open_log()
    first = log.append([ev("u1", "a", event_id="e-1"), ev("u1", "b"), ev("u2", "a", event_id="e-1")])
    assert None not in first  # the same id for another user is another event
    again = open_log().append([ev("u1", "a", event_id="e-1"), ev("u1", "c", event_id="e-2"),
                               ev("u1", "c", event_id="e-2"), ev("u1", "b")])  # a retry, a repeat in one batch
    assert again[0] is None and again[1] is not None and again[2] is None and again[3] is not None
    assert [e.item_id for e in log.user_events("u1")] == ["a", "b", "c", "b"]
    assert log.head() >= again[3] and [e.seq for e in log.changes_after(first[-1]).events] == [again[1], again[3]]
    log.forget_user("u1")  # forgetting takes the ids too: the same id later is a new event
    assert None not in log.append([ev("u1", "a", event_id="e-1")])


def test_meta_and_users_after(open_log):
    log = open_log()
    first = log.append([ev("u1", "a")])[-1]
    log.append([ev("u2", "b")])
    assert log.users_after(first) == ["u2"]
    log.set_meta("k", "1"); log.set_meta("k", "2")
    assert log.get_meta("k") == "2" and log.get_meta("missing", "x") == "x"


def test_profile_salts_are_made_once(open_log):
    log = open_log()
    assert log.profile_salt("u1") is None
    salts = log.profile_salts(["u1", "u2"])
    assert set(salts) == {"u1", "u2"} and salts["u1"] != salts["u2"] and len(salts["u1"]) == 16
    assert open_log().profile_salts(["u1", "u3"])["u1"] == salts["u1"] == log.profile_salt("u1")


def test_items_are_stored_with_their_vectors_and_deletes_are_changes(open_log):
    log = open_log()
    log.put_items("items", [point("a", 1, "Stapler"), point("b", 2)])
    log.put_items("items", [point("a", 3, "Red stapler")])  # a later write wins
    log.put_items("other", [point("a", 4)])
    stored = {p.id: p for page in open_log().stored_items("items", batch=1) for p in page}
    assert set(stored) == {"a", "b"} and stored["a"].payload["title"] == "Red stapler"
    np.testing.assert_array_equal(stored["a"].vector, point("a", 3).vector)
    assert stored["a"].sparse == SparseVector([1, 5], [0.5, 1.5])
    mark = log.head()
    log.delete_items("items", ["b"])
    assert [p.id for page in log.stored_items("items") for p in page] == ["a"]
    changes = log.changes_after(mark)
    assert [(c.collection, c.id, c.point) for c in changes.items] == [("items", "b", None)]


def test_changes_after_gives_every_kind_of_write_in_one_cut(open_log):
    log = open_log()
    start = log.head()
    log.append([ev("u1", "a")])
    log.set_preferences("u2", "quiet keyboards", {}, NOW)
    log.put_items("items", [point("c", 5)])
    log.append([ev("u3", "c"), ev("u3", "a")])
    changes = open_log().changes_after(start)
    assert changes.head == log.head() == start + 5
    assert [e.user_id for e in changes.events] == ["u1", "u3", "u3"]
    assert [u for _, u in changes.preferences] == ["u2"]
    assert [c.id for c in changes.items] == ["c"] and changes.items[0].point.payload["title"] == "x"
    assert not log.changes_after(changes.head)
    # A limit pages the events, and the other kinds stop at the same number.
    first = log.changes_after(start, limit=1)
    assert [e.seq for e in first.events] == [start + 1] and first.head == start + 1 and not first.preferences
    rest = log.changes_after(first.head)
    assert rest.head == start + 5 and len(rest.events) == 2 and len(rest.preferences) == 1


def test_a_follower_never_skips_a_number_while_two_instances_write(open_log):
    """Writers on two connections commit concurrently; a third polls ``changes_after`` meanwhile.
    Numbers must become visible in order (a later one never before an earlier one), or a
    follower that moved past a gap would miss a write forever."""
    a, b, reader = open_log(), open_log(), open_log()
    stop = threading.Event()
    seen: list[int] = []
    start = reader.head()  # read before any writer starts: a thread may begin after their first commits

    def follow():
        position = start
        while not stop.is_set() or position < reader.head():
            changes = reader.changes_after(position, limit=50)
            seen.extend(e.seq for e in changes.events)
            position = changes.head

    def write(log, user):
        for i in range(40):
            log.append([ev(user, f"i{i}"), ev(user, f"j{i}")])

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=write, args=(log, user)) for log, user in ((a, "ua"), (b, "ub"))]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    follower.join()
    assert sorted(seen) == seen and len(seen) == len(set(seen)) == 160


def test_an_older_sqlite_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "events.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT,
            type TEXT NOT NULL, value REAL, query TEXT, ts REAL NOT NULL);
        CREATE TABLE users (user_id TEXT PRIMARY KEY, preferences TEXT, attributes TEXT NOT NULL DEFAULT '{}',
            updated REAL NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO events (user_id, item_id, type, ts) VALUES ('u1', 'a', 'click', 1), ('u1', 'b', 'view', 2);
        INSERT INTO users VALUES ('u1', 'pens', '{}', 1);""")
    old.commit(); old.close()
    log = SqliteEventLog(path)
    assert log.head() == 2 and [e.item_id for e in log.user_events("u1")] == ["a", "b"]
    assert log.append([ev("u1", "c")]) == [3]
    assert log.append([ev("u1", "d", event_id="x"), ev("u1", "d", event_id="x")]) == [4, None]  # version 3
    assert log.preferences("u1").preferences == "pens"
    log.close()


def test_postgres_schema_is_applied_once_by_instances_starting_together(postgres_url):
    from retrieval.storage.postgres_log import MIGRATIONS, PostgresEventLog

    logs, errors = [], []

    def start():
        try:
            logs.append(PostgresEventLog(postgres_url, pool_size=1))
        except Exception as err:  # noqa: BLE001 - the assertion below reports it
            errors.append(err)
    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(log.schema_version() == max(MIGRATIONS) for log in logs)
    for log in logs:
        log.close()


def test_an_unreachable_database_is_said_in_one_line(capsys, tmp_path, monkeypatch):
    from service.cli import main
    from tests.postgres_server import free_port

    monkeypatch.setenv("HYBRIDREC_DATABASE_URL", f"postgresql://hybridrec:s3cret@127.0.0.1:{free_port()}/nothing")
    for command in (["rebuild-index"], ["keys", "list"]):  # the record's and the keys' connections
        assert main([*command, "--data-dir", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert "cannot use the PostgreSQL database at 127.0.0.1" in err and "HYBRIDREC_DATABASE_URL" in err
        assert "s3cret" not in err and "Traceback" not in err
