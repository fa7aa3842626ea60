"""Two engines on one PostgreSQL system of record, each with its own embedded vector index, as two
instances of the service would be: what one accepts, the other answers with after ``catch_up``
(which the service runs before every request)."""

import numpy as np
import pytest

from retrieval.pipeline.request import RecommendRequest

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(make_engine, postgres_url, tmp_path, demo_points):
    a = make_engine(data_dir=tmp_path / "a", database_url=postgres_url)
    b = make_engine(data_dir=tmp_path / "b", database_url=postgres_url)
    a.catalogue.write(demo_points)
    b.catch_up()
    return a, b


def ids(engine, **request):
    return [r.id for r in engine.recommender.recommend(RecommendRequest(**request)).items]


def test_items_written_and_deleted_on_one_instance_are_served_by_the_other(pair, demo_points):
    a, b = pair
    assert b.catalogue.count() == len(demo_points) and b.follower.lag() == 0
    target = demo_points[0].id
    a.catalogue.delete(target)
    assert b.catalogue.get(target) is not None  # not yet applied: nothing has asked
    b.catch_up()
    assert b.catalogue.get(target) is None
    renamed = demo_points[1]
    assert a.catalogue.upsert([{"id": renamed.id, "title": "Copper watering can for house plants"}]).upserted == 1
    b.catch_up()
    assert b.catalogue.get(renamed.id).payload["title"] == "Copper watering can for house plants"
    assert ids(b, query="copper watering can", k=3)[0] == renamed.id


def test_events_and_preferences_on_one_instance_shape_the_others_next_answer(pair, demo_points):
    a, b = pair
    cold = ids(b, user_id="u1")
    history = [p.id for p in demo_points[10:14]]
    report = a.profiles.record([{"user_id": "u1", "type": "purchase", "item_id": i} for i in history])
    assert report.accepted == 4
    b.catch_up()
    assert b.index.history("u1") == history == a.index.history("u1")
    np.testing.assert_allclose(b.profiles.vector("u1"), a.profiles.vector("u1"), atol=1e-5)
    warm = ids(b, user_id="u1")
    assert warm == ids(a, user_id="u1") and warm != cold
    a.profiles.set_preferences("u1", "fountain pens and ink", {})
    b.catch_up()
    np.testing.assert_allclose(b.profiles.vector("u1"), a.profiles.vector("u1"), atol=1e-5)
    # Another user's co-occurrence reaches the other instance's collaborative source too.
    a.profiles.record([{"user_id": "u2", "type": "click", "item_id": i} for i in (history[0], demo_points[40].id)])
    b.catch_up()
    assert b.index.neighbours([history[0]]) == a.index.neighbours([history[0]])


def test_a_user_forgotten_on_one_instance_is_gone_from_the_other(pair, demo_points):
    a, b = pair
    a.profiles.record([{"user_id": "u1", "type": "click", "item_id": p.id} for p in demo_points[:3]])
    b.catch_up()
    b.profiles.refresh_stale()  # b holds a stored profile of its own
    assert b.profiles.vector("u1") is not None and b.index.history("u1")
    assert a.forget_user("u1").forgotten
    b.catch_up()
    assert b.index.history("u1") == [] and b.profiles.vector("u1") is None
    assert not b.profiles.known("u1") and "u1" not in b.stale_profiles


def test_a_new_instance_builds_its_index_from_the_record_and_computes_profiles_it_never_stored(
        pair, make_engine, postgres_url, tmp_path, demo_points):
    a, _ = pair
    a.profiles.record([{"user_id": "u1", "type": "purchase", "item_id": p.id} for p in demo_points[5:8]])
    a.profiles.refresh_stale()
    late = make_engine(data_dir=tmp_path / "late", database_url=postgres_url)
    assert late.catalogue.count() == len(demo_points)
    np.testing.assert_allclose(late.profiles.vector("u1"), a.profiles.vector("u1"), atol=1e-5)
    assert ids(late, user_id="u1") == ids(a, user_id="u1")


def test_events_of_two_instances_writing_at_once_are_each_applied_once(pair, demo_points):
    import threading

    a, b = pair
    items = [p.id for p in demo_points[:50]]

    def write(engine, user):
        for i in range(0, 50, 5):
            engine.event_writer.submit([{"user_id": user, "type": "click", "item_id": x} for x in items[i:i + 5]]).result()

    threads = [threading.Thread(target=write, args=args) for args in ((a, "ua"), (b, "ub"), (a, "uc"), (b, "uc"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.catch_up(); b.catch_up()
    for user in ("ua", "ub"):
        assert a.index.history(user) == b.index.history(user) == items
    assert sorted(a.index.history("uc")) == sorted(b.index.history("uc")) == sorted(items)
    assert a.log.count() == 200


def test_a_reranker_reloaded_on_one_worker_serves_on_every_worker(make_engine, postgres_url, tmp_path, demo_points):
    from tests.retrieval.test_reranking import save

    data = tmp_path / "shared"  # one machine: one data directory (and models), a slot per worker
    one = make_engine(data_dir=data, database_url=postgres_url, instance="worker-0")
    two = make_engine(data_dir=data, database_url=postgres_url, instance="worker-1")
    version = save(one.rerankers, accepted=True)
    assert two.recommender.reranker is None  # a newer model on disk serves only when chosen
    assert one.reload_reranker() == version
    two.follow_serving_models()
    assert two.recommender.reranker.version == version
    third = make_engine(data_dir=data, database_url=postgres_url, instance="worker-2")
    assert third.recommender.reranker.version == version  # a new worker serves what the others serve


def test_a_sequence_encoder_reloaded_on_one_worker_serves_on_every_worker(make_engine, postgres_url, tmp_path,
                                                                          demo_points):
    from encoders.sequence import SequenceEncoder, SequenceModel, SequenceShape

    data = tmp_path / "shared"
    one = make_engine(data_dir=data, database_url=postgres_url, instance="worker-0")
    two = make_engine(data_dir=data, database_url=postgres_url, instance="worker-1")
    one.catalogue.write(demo_points)
    model = SequenceModel(SequenceEncoder(SequenceShape(item_dim=one.encoder.dim, hidden=16), 0), [], device="cpu")
    version = one.sequences.save(model.save, {"accepted": True, "fusion_weight": 0.5, "item_space": one.item_space()})
    assert two.recommender.sources["sequence"].loaded is None
    assert one.reload_sequence() == version
    two.follow_serving_models()
    assert two.recommender.sources["sequence"].loaded.version == version
    third = make_engine(data_dir=data, database_url=postgres_url, instance="worker-2")
    assert third.recommender.sources["sequence"].loaded.version == version
    history = [p.id for p in demo_points[:3]]
    assert third.recommender.recommend(RecommendRequest(history=history, k=5)).sequence == version
    # No accepted version left: a reload on one worker turns the source off on all.
    meta = one.sequences.path(version) / "metadata.json"
    meta.write_text(meta.read_text().replace('"accepted": true', '"accepted": false'))
    assert one.reload_sequence() is None
    two.follow_serving_models()
    assert two.recommender.sources["sequence"].loaded is None


def test_a_trainer_holding_its_engine_still_sees_no_other_instance_write_until_it_lets_go(
        make_engine, postgres_url, tmp_path, demo_points):
    import time

    from tests.retrieval.test_reranking import save

    data = tmp_path / "shared"
    server = make_engine(data_dir=data, database_url=postgres_url, instance="worker-0")
    trainer = make_engine(data_dir=data, database_url=postgres_url, instance="worker-1")
    server.catalogue.write(demo_points)
    trainer.catch_up()
    gone, history = demo_points[50].id, [p.id for p in demo_points[:3]]

    def as_before():
        return (trainer.index.history("u1") == [] and trainer.catalogue.get(gone) is not None
                and trainer.recommender.reranker is None)

    with trainer.held_still():
        server.profiles.record([{"user_id": "u1", "type": "click", "item_id": i} for i in history])
        server.catalogue.delete(gone)
        version = save(server.rerankers, accepted=True)
        assert server.reload_reranker() == version
        assert trainer.follow_once() is False and as_before()
        time.sleep(1.5)  # three turns of the follower thread: it applies nothing either
        assert as_before() and trainer.follower.lag() > 0
    deadline = time.monotonic() + 30
    while trainer.follower.lag() and time.monotonic() < deadline:  # the thread takes everything up
        time.sleep(0.1)
    # One whole step of our own, after any the thread has under way (False: the thread holds it now;
    # asserting then raced the thread's loading of the reranker).
    while not trainer.follow_once() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trainer.index.history("u1") == history and trainer.catalogue.get(gone) is None
    assert trainer.recommender.reranker.version == version


def test_a_forget_removes_the_user_from_every_snapshot_stopped_instances_left(make_engine, postgres_url, tmp_path,
                                                                             demo_points):
    from retrieval.engine import INDEX_SNAPSHOT

    data, elsewhere = tmp_path / "shared", tmp_path / "other-machine"
    server = make_engine(data_dir=data, database_url=postgres_url, instance="worker-0")
    server.catalogue.write(demo_points)
    server.profiles.record([{"user_id": "forget-me-7q", "type": "click", "item_id": p.id} for p in demo_points[:3]])
    # Stopped since: a worker slot, the command line (the data directory's own), another machine's instance.
    stopped = [(make_engine(data_dir=data, database_url=postgres_url, instance="worker-1"),
                data / "instances" / "worker-1" / INDEX_SNAPSHOT),
               (make_engine(data_dir=data, database_url=postgres_url), data / INDEX_SNAPSHOT),
               (make_engine(data_dir=elsewhere, database_url=postgres_url), elsewhere / INDEX_SNAPSHOT)]
    for engine, snapshot in stopped:
        engine.close()
        assert b"forget-me-7q" in snapshot.read_bytes()
    assert server.forget_user("forget-me-7q").forgotten
    assert not stopped[0][1].exists() and not stopped[1][1].exists()  # this machine's, at once
    assert stopped[2][1].exists()  # another machine's: gone when that instance starts
    restarted = make_engine(data_dir=elsewhere, database_url=postgres_url)
    assert restarted.index.history("forget-me-7q") == [] and not stopped[2][1].exists()
    restarted.close()
    assert b"forget-me-7q" not in stopped[2][1].read_bytes()


def test_a_model_chosen_elsewhere_that_this_machine_lacks_leaves_what_serves_serving(make_engine, postgres_url,
                                                                                     tmp_path, demo_points, caplog):
    from encoders.sequence import SequenceEncoder, SequenceModel, SequenceShape
    from retrieval.engine import SERVING_RERANKER, SERVING_SEQUENCE
    from tests.retrieval.test_reranking import save

    data = tmp_path / "shared"
    one = make_engine(data_dir=data, database_url=postgres_url, instance="worker-0")
    two = make_engine(data_dir=data, database_url=postgres_url, instance="worker-1")
    one.catalogue.write(demo_points)
    two.catch_up()
    model = SequenceModel(SequenceEncoder(SequenceShape(item_dim=one.encoder.dim, hidden=16), 0), [], device="cpu")
    sequence = one.sequences.save(model.save, {"accepted": True, "fusion_weight": 0.5, "item_space": one.item_space()})
    reranker = save(one.rerankers, accepted=True)
    assert one.reload_sequence() == sequence and one.reload_reranker() == reranker
    two.follow_serving_models()
    # Another machine reloaded versions this machine's models/ does not hold.
    one.log.set_meta(SERVING_SEQUENCE, "v20990101-000000")
    one.log.set_meta(SERVING_RERANKER, "v20990101-000000")
    caplog.clear()
    for _ in range(3):
        two.follow_serving_models()
    assert two.recommender.sources["sequence"].loaded.version == sequence
    assert two.recommender.reranker.version == reranker
    assert caplog.text.count("sequence encoder v20990101-000000 cannot be served") == 1  # tried once a minute
    assert caplog.text.count("reranker v20990101-000000 cannot be served") == 1


def test_a_change_read_before_this_instance_wrote_the_same_item_never_overwrites_it(pair, demo_points):
    a, b = pair
    item = demo_points[7].id
    a.catalogue.upsert([{"id": item, "title": "Copper watering can, first version"}])
    page = b.log.changes_after(b.follower.position)  # b's follower has read a's change...
    b.catalogue.upsert([{"id": item, "title": "Copper watering can, second version"}])  # ...b writes the item...
    b.follower.apply(page)  # ...and only then applies what it read
    b.catch_up()
    assert b.catalogue.get(item).payload["title"] == "Copper watering can, second version"
    a.catch_up()
    assert a.catalogue.get(item).payload["title"] == "Copper watering can, second version"
    gone = demo_points[8].id
    a.catalogue.upsert([{"id": gone, "title": "A stapler about to go"}])
    page = b.log.changes_after(b.follower.position)
    b.catalogue.delete(gone)
    b.follower.apply(page)
    b.catch_up()
    assert b.catalogue.get(gone) is None


def test_an_instances_own_events_are_never_taken_in_again_by_its_follower(pair, demo_points):
    import threading

    _, b = pair
    items = [p.id for p in demo_points[20:22]]
    seen = {}
    registers = b.profiles.written

    def said_late(seqs):  # the follower reads the committed page before the write says it is its own
        follower = threading.Thread(target=lambda: seen.setdefault("applied", b.follower.catch_up()))
        follower.start()
        follower.join(0.5)
        registers(seqs)
        seen["follower"] = follower

    b.profiles.written = said_late
    with b.held_still():  # the follower thread stays out of it: only the one above reads
        b.profiles.record([{"user_id": "u9", "type": "click", "item_id": i} for i in items])
        seen["follower"].join()
    assert seen["applied"] == (0, 0) and b.index.history("u9") == items
