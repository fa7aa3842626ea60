from retrieval.storage.event_log import EventLog
from retrieval.storage.records import parse_event

NOW = 1_800_000_000.0


def ev(user, item, type_="click", **kw):
    return parse_event({"user_id": user, "item_id": item, "type": type_, **kw}, NOW)


def test_events_are_committed_and_visible_to_a_new_connection(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")
    seqs = log.append([ev("u1", "a"), ev("u1", "b"), ev("u2", "a")])
    assert seqs == sorted(seqs) and len(seqs) == 3
    other = EventLog(tmp_path / "events.sqlite3")  # as a restarted process would
    assert [e.item_id for e in other.user_events("u1")] == ["a", "b"]
    assert [e.item_id for e in other.user_events("u1", limit=1)] == ["b"]
    assert other.event_counts("u1") == {"click": 2}
    assert other.user_item_ids("u1") == {"a", "b"}
    assert [e.seq for e in other.iter_events(batch=2)] == seqs
    log.close(); other.close()


def test_forget_removes_events_and_preferences(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")
    log.append([ev("u1", "a"), ev("u2", "b")])
    log.set_preferences("u1", "fountain pens", {"tier": "gold"}, NOW)
    assert log.preferences("u1").attributes == {"tier": "gold"}
    assert log.forget_user("u1") == 1
    assert log.user_events("u1") == [] and log.preferences("u1") is None
    assert [e.user_id for e in log.iter_events()] == ["u2"]
    assert set(log.user_ids()) == {"u2"}


def test_meta_and_users_after(tmp_path):
    log = EventLog(tmp_path / "events.sqlite3")
    first = log.append([ev("u1", "a")])[-1]
    log.append([ev("u2", "b")])
    assert log.users_after(first) == ["u2"]
    log.set_meta("k", "1"); log.set_meta("k", "2")
    assert log.get_meta("k") == "2" and log.get_meta("missing", "x") == "x"
