"""After DELETE /v1/users/{id} nothing of the user is left: not in the log, nor the profile store,
the co-occurrence index, popularity, or the bytes of the database files; and the answer names the
trained models that learned from the user."""

from pathlib import Path

from litestar.testing import TestClient

from retrieval.state.cooccurrence import POSITIVE_TYPES, CoOccurrenceIndex
from service.app import create_app
from service.settings import Settings

SECRET_USER = "forget-me-7f3a9c"
SECRET_QUERY = "left-handed-quill-zq81"


def _bytes_on_disk(data_dir: Path, needle: str) -> list[str]:
    """Files under the data directory whose bytes hold ``needle`` (the event log and its WAL included)."""
    found = []
    for path in data_dir.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            found.append(str(path.relative_to(data_dir)))
    return found


def _index_from_log(log) -> CoOccurrenceIndex:
    index = CoOccurrenceIndex()
    for event in log.iter_events():
        if event.item_id is not None and event.type in POSITIVE_TYPES:
            index.add(event.user_id, event.item_id)
    return index


def test_forgetting_leaves_nothing_and_names_the_models_that_learned(engine, keys, tmp_path):
    items = [p.id for p in engine.store.scroll(engine.catalogue.collection, 6)[0]]
    data_dir = engine.config.data_dir
    with TestClient(create_app(Settings(data_dir=tmp_path / "unused"), engine=engine, access_keys=keys)) as client:
        # Enough rows that the user's fill whole pages of the log: freed pages are where copies hide.
        others = [{"user_id": f"other{n}", "type": "purchase", "item_id": items[n % 3]} for n in range(60)]
        mine = [{"user_id": SECRET_USER, "type": t, "item_id": i} for t in ("click", "purchase") for i in items]
        mine += [{"user_id": SECRET_USER, "type": "search", "query": f"{SECRET_QUERY} {n}"} for n in range(200)]
        assert client.post("/v1/events", json={"events": others[:30] + mine + others[30:]}).json()["accepted"] == 272
        put = client.put(f"/v1/users/{SECRET_USER}", json={"preferences": f"{SECRET_QUERY} only"})
        assert put.status_code == 200
        assert client.post("/v1/recommendations", json={"user_id": SECRET_USER, "k": 3}).status_code == 200
        # A model trained on the log as it is now, and one trained before the user existed.
        first = engine.log.first_seq(SECRET_USER)
        engine.models.rerankers.save(lambda folder: folder.mkdir(parents=True),
                                     {"accepted": True, "log_seq": engine.log.max_seq()})
        engine.models.encoders.save(lambda folder: folder.mkdir(parents=True), {"accepted": False, "log_seq": first - 1})
        popular_before = dict(engine.index.popular(10))

        gone = client.delete(f"/v1/users/{SECRET_USER}")
        assert gone.status_code == 200
        body = gone.json()
        assert body["forgotten"] is True and body["events_deleted"] == 212
        assert [(m["kind"], m["certain"]) for m in body["models_trained_on_user"]] == [("reranker", True)]
        assert client.get(f"/v1/users/{SECRET_USER}").status_code == 404
        audit = client.get("/v1/admin/audit").json()
        # The audit names the user as the tombstone does (the log's keyed digest), never by the id.
        digest = f"user key {engine.log.user_key(SECRET_USER)}"
        assert any(row["target"] == digest and "reranker" in row["detail"] for row in audit["entries"])
        assert SECRET_USER not in str(audit)

    assert engine.log.user_events(SECRET_USER) == [] and engine.log.preferences(SECRET_USER) is None
    assert engine.profiles.point_id(SECRET_USER) is None  # its salt is gone: no leftover links to the user
    assert engine.index.history(SECRET_USER) == []
    rebuilt = _index_from_log(engine.log)
    assert dict(engine.index.popular(10)) == dict(rebuilt.popular(10)) != popular_before
    engine.event_writer.close()  # as at shutdown: every derived write flushed
    engine.store.close()
    engine.log.close()
    assert _bytes_on_disk(data_dir, SECRET_QUERY) == []
    assert _bytes_on_disk(data_dir, SECRET_USER) == []


def test_the_command_line_forgets_an_id_no_path_can_carry(make_engine, demo_points, tmp_path, capsys):
    from retrieval.storage.records import ParsedEvent
    from service.access import AccessKeys
    from service.cli import main

    engine = make_engine()
    engine.catalogue.write(demo_points[:5])
    legacy = "team/alice"  # stored before the id rule refused "/": DELETE /v1/users/{id} cannot name it
    engine.log.append([ParsedEvent(legacy, "click", demo_points[0].id, None, None, 1.7e9)])
    engine.close()
    data_dir = str(engine.config.data_dir)
    assert main(["forget-user", legacy, "--data-dir", data_dir]) == 0
    assert f"forgot {legacy!r}: 1 events" in capsys.readouterr().out
    reopened = make_engine(engine.config.data_dir)
    assert reopened.log.event_counts(legacy) == {}
    digest = reopened.log.user_key(legacy)
    reopened.close()
    keys = AccessKeys(engine.config.data_dir)
    # The audit names the user as the tombstone does, by the log's keyed digest, never by the id.
    assert [(e.action, e.target, e.key_id) for e in keys.audit_log(1)] == [
        ("forget user", f"user key {digest}", "cli")]
    keys.close()
    assert main(["forget-user", legacy, "--data-dir", data_dir]) == 0
    assert "nothing to forget" in capsys.readouterr().out


def test_a_forget_while_a_reindex_rebuilds_the_profiles_is_refused_until_it_is_done(engine, tmp_path):
    from litestar.testing import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path / "data"), engine=engine)) as client:
        reindex_job = client.app.dependencies["reindex_job"].dependency()
        reindex_job.state.state = "running"
        try:
            r = client.delete("/v1/users/u1")
            assert r.status_code == 409 and r.headers["retry-after"] == "30" and "reindex" in r.json()["detail"]
        finally:
            reindex_job.state.state = "idle"
        assert client.delete("/v1/users/u1").status_code == 200
