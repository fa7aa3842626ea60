"""Items live in the system of record with their vectors; the vector index is derived from it:
rebuilt from it without re-encoding, healed from it after a crash between the two writes, and
filled into it once for a data directory from before."""

import sqlite3

import numpy as np

from retrieval.pipeline.request import RecommendRequest
from retrieval.state.catalogue import Catalogue
from retrieval.storage.sqlite_log import SqliteEventLog


def top(engine, query, k=5):
    return [r.id for r in engine.recommender.recommend(RecommendRequest(query=query, k=k)).items]


def test_the_item_index_is_rebuilt_from_stored_vectors(engine, demo_points, monkeypatch):
    engine.catalogue.delete(demo_points[0].id)
    before = top(engine, "quiet mechanical keyboard")
    monkeypatch.setattr(Catalogue, "encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-encoded")))
    assert engine.rebuild_item_index() == len(demo_points) - 1
    assert engine.catalogue.count() == len(demo_points) - 1 and engine.catalogue.get(demo_points[0].id) is None
    np.testing.assert_allclose(engine.catalogue.vectors([demo_points[5].id])[demo_points[5].id],
                               demo_points[5].vector / np.linalg.norm(demo_points[5].vector), atol=1e-5)
    assert top(engine, "quiet mechanical keyboard") == before


def test_an_item_recorded_but_not_indexed_before_a_crash_is_indexed_at_the_next_start(
        make_engine, demo_points, tmp_path):
    data = tmp_path / "data"
    make_engine(data_dir=data).close()
    record = SqliteEventLog(data / "events.sqlite3")  # the record's half of a write whose index half never ran
    record.put_items("items", demo_points[:3])
    record.close()
    engine = make_engine(data_dir=data)
    assert engine.catalogue.count() == 3 and engine.catalogue.get(demo_points[2].id) is not None


def test_a_data_directory_from_before_gives_its_items_to_the_record_once(make_engine, demo_points, tmp_path):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.store.upsert("items", demo_points[:4])  # as an older version wrote them: the index only
    engine.close()
    with sqlite3.connect(data / "events.sqlite3") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'index_seq'")
    reopened = make_engine(data_dir=data)
    stored = [p.id for page in reopened.log.stored_items("items") for p in page]
    assert sorted(stored) == sorted(p.id for p in demo_points[:4])
    assert reopened.rebuild_item_index() == 4


def test_an_interrupted_rebuild_is_done_again_at_the_next_start(make_engine, demo_points, tmp_path, monkeypatch):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.catalogue.write(demo_points)
    original = Catalogue._index

    def stopped_part_way(self, points, deleted):
        original(self, points[:100], deleted)
        raise KeyboardInterrupt  # Ctrl-C during `hybridrec rebuild-index`

    monkeypatch.setattr(Catalogue, "_index", stopped_part_way)
    try:
        engine.rebuild_item_index()
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Catalogue, "_index", original)
    assert 0 < engine.catalogue.count() < len(demo_points)
    engine.close()  # a clean shutdown after it must not claim the index whole
    assert make_engine(data_dir=data).catalogue.count() == len(demo_points)


def test_a_write_the_index_failed_is_indexed_at_the_next_start(make_engine, demo_points, tmp_path, monkeypatch):
    data = tmp_path / "data"
    engine = make_engine(data_dir=data)
    engine.catalogue.write(demo_points[:10])
    monkeypatch.setattr(type(engine.store), "upsert", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    try:
        engine.catalogue.write(demo_points[10:12])  # the record took them; the answer was an error
    except OSError:
        pass
    monkeypatch.undo()
    engine.close()
    reopened = make_engine(data_dir=data)
    assert reopened.catalogue.count() == 12 and reopened.catalogue.get(demo_points[11].id) is not None
