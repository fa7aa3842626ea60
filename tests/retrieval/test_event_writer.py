"""Group commit: concurrent requests share one durable write, each hears its own report, and the
next read reflects every acknowledged event before its profile is written."""

import threading

import numpy as np
import pytest

from retrieval.state.event_writer import EventWriter, WriterBusy
from retrieval.state.profiles import PROFILES_SEQ


def _items(engine, n):
    return [p.id for p in engine.store.scroll(engine.catalogue.collection, n)[0]]


class _HeldLog:
    """Wraps the log's append: counts transactions and holds the first until released."""

    def __init__(self, log):
        self.log, self.calls, self.release = log, 0, threading.Event()
        self.original = log.append
        log.append = self.append

    def append(self, events):
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)
        return self.original(events)


def test_concurrent_requests_share_one_commit_and_each_gets_its_report(engine):
    items = _items(engine, 20)
    held = _HeldLog(engine.log)
    writer = EventWriter(lambda: engine.profiles)
    first = writer.submit([{"user_id": "u0", "type": "click", "item_id": items[0]}])
    while held.calls == 0:  # the first commit has started and is held
        threading.Event().wait(0.01)
    futures = [writer.submit([{"user_id": f"u{n}", "type": "click", "item_id": items[n]},
                              {"user_id": f"u{n}", "type": "click", "item_id": "no-such-item"}])
               for n in range(1, 17)]
    held.release.set()
    assert first.result(30).accepted == 1
    reports = [f.result(30) for f in futures]
    assert held.calls == 2  # sixteen requests queued behind the first: one more transaction
    assert all(r.accepted == 1 and [x.index for x in r.rejected] == [1] for r in reports)
    writer.close()
    assert engine.log.count() == 17
    assert engine.log.get_meta(PROFILES_SEQ) == str(engine.log.max_seq())
    assert len(engine.stale_profiles) == 0


def test_an_acknowledged_event_is_read_before_its_profile_is_written(engine):
    items = _items(engine, 3)
    reports = engine.profiles.commit([[{"user_id": "fresh", "type": "purchase", "item_id": items[0]}]])
    assert reports[0].accepted == 1
    assert "fresh" in engine.stale_profiles
    assert engine.profiles.point_id("fresh") is None  # no profile written yet
    from_log = engine.profiles.vector("fresh")
    assert from_log is not None
    engine.profiles.refresh_stale()
    assert "fresh" not in engine.stale_profiles
    assert np.allclose(engine.profiles.vector("fresh"), from_log, atol=1e-5)


def test_a_full_queue_refuses_and_queues_nothing(engine):
    items = _items(engine, 1)
    held = _HeldLog(engine.log)
    writer = EventWriter(lambda: engine.profiles, max_pending_rows=3)
    row = {"user_id": "u", "type": "view", "item_id": items[0]}
    first = writer.submit([row, row])
    with pytest.raises(WriterBusy):
        writer.submit([row, row])
    assert writer.pending_rows == 2
    held.release.set()
    assert first.result(30).accepted == 2
    writer.close()
    assert engine.log.count() == 2


def test_profiles_not_written_before_a_crash_are_repaired_at_start(make_engine, demo_points, tmp_path):
    engine = make_engine()
    engine.catalogue.write(demo_points)
    items = _items(engine, 2)
    engine.profiles.commit([[{"user_id": "u1", "type": "like", "item_id": items[1]}]])
    engine.profiles.refresh_stale = lambda now=None: 0  # the process dies before the refresh
    engine.close()
    reopened = make_engine()
    assert reopened.store.retrieve(reopened.profiles.collection, [reopened.profiles.point_id("u1")]) != []
    assert reopened.profiles.lag() == 0


def test_stated_preferences_committed_before_a_crash_reach_the_profile_at_start(make_engine, demo_points):
    engine = make_engine()
    engine.catalogue.write(demo_points)
    engine.profiles.record([{"user_id": "u1", "type": "click", "item_id": demo_points[3].id}])
    engine.profiles.refresh_stale()
    before = engine.profiles.vector("u1")
    # The record took the preferences (the answer said so); the process died before the profile write.
    engine.log.set_preferences("u1", "fountain pens and ink", {}, 1_800_000_000.0)
    engine.log.set_preferences("prefs-only", "a quiet mechanical keyboard", {}, 1_800_000_000.0)
    engine.close()
    reopened = make_engine()
    stored = {u: reopened.store.retrieve(reopened.profiles.collection, [reopened.profiles.point_id(u)], with_vectors=True)
              for u in ("u1", "prefs-only")}
    assert stored["prefs-only"] != [] and stored["u1"] != []
    assert not np.allclose(stored["u1"][0].vector, before / np.linalg.norm(before), atol=1e-4)


def test_forgetting_a_user_leaves_no_profile_and_no_key_to_a_leftover(engine):
    items = _items(engine, 1)
    engine.profiles.record([{"user_id": "gone", "type": "click", "item_id": items[0]}])
    point = engine.profiles.point_id("gone")
    assert point is not None and "gone" not in point  # the store never sees the user's id
    engine.profiles.commit([[{"user_id": "gone", "type": "like", "item_id": items[0]}]])
    engine.profiles.forget("gone")
    engine.profiles.refresh_stale()
    assert engine.profiles.vector("gone") is None and engine.profiles.point_id("gone") is None
    assert engine.store.retrieve(engine.profiles.collection, [point]) == []


def test_profiles_stored_under_user_ids_by_an_older_version_are_stored_again_salted(make_engine, demo_points):
    from retrieval.engine import PROFILE_IDS
    from retrieval.storage.vector_store import StoredPoint

    engine = make_engine()
    engine.catalogue.write(demo_points)
    items = _items(engine, 2)
    engine.profiles.record([{"user_id": "old", "type": "like", "item_id": items[0]}])
    vector = engine.profiles.vector("old")
    engine.store.upsert(engine.profiles.collection, [StoredPoint("old", {}, vector)])  # as older versions stored it
    engine.log.set_meta(PROFILE_IDS, "")
    engine.close()
    reopened = make_engine()
    assert reopened.store.retrieve(reopened.profiles.collection, ["old"]) == []
    assert np.allclose(reopened.profiles.vector("old"), vector, atol=1e-5)


def test_a_user_past_the_event_cap_is_refused_with_a_reason_until_forgotten(engine, monkeypatch):
    from retrieval.state import profiles as profiles_module

    monkeypatch.setattr(profiles_module, "MAX_EVENTS_PER_USER", 3)
    items = _items(engine, 1)
    row = {"user_id": "busy", "type": "view", "item_id": items[0]}
    assert engine.profiles.record([row, row]).accepted == 2
    report = engine.profiles.record([row, row, {**row, "user_id": "calm"}])
    assert report.accepted == 2 and [(r.index, r.field) for r in report.rejected] == [(1, "user_id")]
    assert "3 events, the most one user may have" in report.rejected[0].error
    assert engine.log.event_counts("busy") == {"view": 3}
    engine.profiles.forget("busy")
    assert engine.profiles.record([row]).accepted == 1
