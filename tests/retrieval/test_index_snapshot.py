"""The co-occurrence index starts from the snapshot saved at shutdown plus the log after it, never
from a snapshot that holds a forgotten user, and from the whole log when the snapshot is unusable."""

from retrieval.engine import INDEX_SNAPSHOT
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.records import parse_event
from retrieval.storage.sqlite_log import SqliteEventLog


def clicks(user, items):
    return [{"user_id": user, "type": "click", "item_id": i} for i in items]


def counting_adds(monkeypatch):
    calls = []
    original = CoOccurrenceIndex.add
    monkeypatch.setattr(CoOccurrenceIndex, "add", lambda self, u, i: (calls.append((u, i)), original(self, u, i)))
    return calls


def test_a_restart_reads_the_snapshot_and_only_the_log_after_it(make_engine, demo_points, tmp_path, monkeypatch):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.catalogue.write(demo_points)
    ids = [p.id for p in demo_points]
    engine.profiles.record(clicks("u1", ids[:5]) + clicks("u2", ids[3:9]))
    engine.close()
    assert (data / INDEX_SNAPSHOT).exists()
    late = SqliteEventLog(data / "events.sqlite3")  # committed after the snapshot (a kill before the next one)
    late.append([parse_event(e, 1_800_000_000.0) for e in clicks("u1", ids[20:22])])
    late.close()
    adds = counting_adds(monkeypatch)
    reopened = make_engine(data_dir=data)
    assert adds == [("u1", ids[20]), ("u1", ids[21])]
    assert reopened.index.history("u1") == ids[:5] + ids[20:22] and reopened.index.history("u2") == ids[3:9]


def test_forgetting_removes_the_snapshot_and_the_next_one_lacks_the_user(make_engine, demo_points, tmp_path):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.catalogue.write(demo_points)
    engine.profiles.record(clicks("forget-me-7q", [p.id for p in demo_points[:3]]))
    engine.save_index()
    assert b"forget-me-7q" in (data / INDEX_SNAPSHOT).read_bytes()
    engine.forget_user("forget-me-7q")
    assert not (data / INDEX_SNAPSHOT).exists()
    engine.close()
    assert b"forget-me-7q" not in (data / INDEX_SNAPSHOT).read_bytes()


def test_an_unusable_snapshot_means_the_whole_log(make_engine, demo_points, tmp_path):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.catalogue.write(demo_points)
    ids = [p.id for p in demo_points]
    engine.profiles.record(clicks("u1", ids[:4]))
    engine.close()
    (data / INDEX_SNAPSHOT).write_bytes(b"not a snapshot")
    assert make_engine(data_dir=data).index.history("u1") == ids[:4]


def test_events_written_around_the_engine_are_not_claimed_by_its_snapshot(make_engine, demo_points, tmp_path):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.catalogue.write(demo_points)
    ids = [p.id for p in demo_points]
    engine.log.append([parse_event(e, 1_800_000_000.0) for e in clicks("u1", ids[:3])])  # not through the engine
    engine.close()
    assert make_engine(data_dir=data).index.history("u1") == ids[:3]
