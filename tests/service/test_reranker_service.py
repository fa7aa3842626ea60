"""The reranker from the command line to the HTTP response: train, reload without a restart,
responses and explanations say which model ranked them."""

import json

import pytest
from litestar.testing import TestClient

from retrieval.engine import Engine, EngineConfig
from service.app import create_app
from service.cli import main
from service.settings import Settings
from tests.retrieval.test_reranking import category_log, clicks, save

pytestmark = pytest.mark.slow


def test_train_reranker_from_the_command_line(encoder, demo_points, demo_items, tmp_path, capsys, monkeypatch):
    from contextlib import contextmanager

    import retrieval.training.reranker as trainer

    data_dir = tmp_path / "data"
    engine = Engine.open(EngineConfig(data_dir=data_dir), encoder=encoder)
    engine.catalogue.write(demo_points)
    category_log(engine, demo_items)
    engine.close()
    # It trains on an engine held still (``Engine.held_still``): on a shared log, nothing another
    # instance writes reaches its lists meanwhile.
    held, original, train = [], Engine.held_still, trainer.train_reranker

    @contextmanager
    def watched(self):
        with original(self):
            held.append(True)
            yield
        held.append(False)

    monkeypatch.setattr(Engine, "held_still", watched)
    monkeypatch.setattr(trainer, "train_reranker", lambda *a, **kw: (held.append("trained"), train(*a, **kw))[1])
    assert main(["train", "reranker", "--data-dir", str(data_dir), "--cross-encoder", "off",
                 "--max-lists", "200", "--device", "cpu"]) == 0
    assert held == [True, "trained", False]
    out = capsys.readouterr().out
    versions = sorted((data_dir / "models" / "reranker").glob("v*"))
    assert len(versions) == 1
    meta = json.loads((versions[0] / "metadata.json").read_text())
    assert f"reranker {meta['version']} {'accepted' if meta['accepted'] else 'rejected'}" in out
    assert "validation retrieval" in out and "validation ranker" in out
    assert (versions[0] / "ranker.pkl").exists() and not (versions[0] / "cross_encoder").exists()


def test_reload_serves_a_new_model_and_responses_name_it(engine, demo_items, tmp_path):
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[1]["id"], demo_items[2]["id"]])
    clicks(engine, "u2", [demo_items[1]["id"], demo_items[3]["id"]])
    with TestClient(create_app(Settings(data_dir=tmp_path / "unused"), engine=engine)) as client:
        before = client.post("/v1/recommendations", json={"user_id": "u1", "k": 5}).json()
        assert before["models"]["reranker"] is None and before["reranked"] is False
        version = save(engine.rerankers, accepted=True)
        reloaded = client.post("/v1/admin/reload").json()
        assert reloaded["serving"] == version
        assert reloaded["versions"][0]["ranker"] == {"cross_encoder": False}
        body = client.post("/v1/recommendations", json={"user_id": "u1", "k": 5, "diversity": 0}).json()
        assert body["models"]["reranker"] == version and body["reranked"] is True
        assert [i["rerank"]["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
        off = client.post("/v1/recommendations", json={"user_id": "u1", "k": 5, "rerank": False}).json()
        assert off["models"]["reranker"] is None and off["reranked"] is False
        first = body["items"][0]
        explained = client.post("/v1/explanations", json={"user_id": "u1", "item_id": first["id"],
                                                          "diversity": 0}).json()
        reranker = explained["evidence"]["reranker"]
        assert reranker["version"] == version and reranker["rank"] == 1
        assert reranker["retrieval_rank"] == first["rerank"]["retrieval_rank"]
        assert reranker["kept_place"] == first["rerank"]["kept_place"]
        if reranker["kept_place"]:  # nobody has taken it: the ranker left it where retrieval put it
            assert "nobody has taken it yet" in explained["text"] and reranker["retrieval_rank"] == 1
        else:
            assert f"moved it from {reranker['retrieval_rank']} to 1 of the" in explained["text"]


def test_responses_and_explanations_name_what_drove_the_ranker(engine, demo_items, tmp_path):
    category_log(engine, demo_items)
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[5]["id"], demo_items[40]["id"]])
    save(engine.rerankers, accepted=True)
    engine.reload_reranker()
    with TestClient(create_app(Settings(data_dir=tmp_path / "unused"), engine=engine)) as client:
        body = client.post("/v1/recommendations", json={"user_id": "u1", "k": 10}).json()
        assert body["reranked"] is True
        for item in body["items"]:  # items the ranker kept in place were not scored by it: no drivers
            assert not (item["rerank"]["kept_place"] and item["rerank"]["drivers"])
        driven = [i for i in body["items"] if any(d["effect"] > 0 for d in i["rerank"]["drivers"])]
        assert driven
        item = driven[0]
        explained = client.post("/v1/explanations", json={"user_id": "u1", "item_id": item["id"]}).json()
        drivers = explained["evidence"]["reranker"]["drivers"]
        assert drivers == item["rerank"]["drivers"]  # the same request ranks the same way, for the same reasons
        assert "what raised its score most against a typical candidate" in explained["text"]
        for d in drivers:
            assert f"({d['effect']:+.4f})" in explained["text"]


def test_a_reload_whose_newest_model_cannot_be_loaded_says_so_and_keeps_what_serves(engine, demo_items, tmp_path):
    clicks(engine, "u1", [demo_items[0]["id"], demo_items[1]["id"]])
    good = save(engine.rerankers, accepted=True)
    with TestClient(create_app(Settings(data_dir=tmp_path / "unused"), engine=engine)) as client:
        assert client.post("/v1/admin/reload").json()["serving"] == good
        broken = save(engine.rerankers, accepted=True)
        (engine.rerankers.path(broken) / "ranker.pkl").write_bytes(b"not a model")
        reloaded = client.post("/v1/admin/reload")
        assert reloaded.status_code == 200 and reloaded.json()["serving"] == good
        assert reloaded.json()["not_loaded"] == [
            f"reranker {broken} is the newest accepted one but could not be loaded (the service's log says why); "
            f"{good} still serves"]
        assert client.get("/v1/admin/audit", params={"limit": 1}).json()["entries"][0]["detail"].endswith(
            f"{good} still serves")


def test_an_engine_starts_on_the_newest_reranker_that_loads_when_the_newest_is_damaged(make_engine, demo_points):
    engine = make_engine()
    engine.catalogue.write(demo_points)
    good = save(engine.rerankers, accepted=True)
    broken = save(engine.rerankers, accepted=True)
    (engine.rerankers.path(broken) / "ranker.pkl").write_bytes(b"")  # a disk that filled up mid-save
    engine.close()
    reopened = make_engine()  # an unreadable pickle used to stop the service from starting
    assert reopened.recommender.reranker.version == good


def test_an_engine_serves_the_newest_sequence_encoder_that_loads_when_the_newest_is_damaged(make_engine, demo_points):
    from encoders.sequence import SequenceEncoder, SequenceModel, SequenceShape

    engine = make_engine()
    engine.catalogue.write(demo_points)
    model = SequenceModel(SequenceEncoder(SequenceShape(item_dim=engine.encoder.dim, hidden=16), 0), [], device="cpu")
    meta = {"accepted": True, "fusion_weight": 0.5, "item_space": engine.item_space()}
    good = engine.sequences.save(model.save, meta)
    broken = engine.sequences.save(model.save, meta)
    for path in engine.sequences.path(broken).iterdir():
        if path.name != "metadata.json":
            path.write_bytes(b"")  # a disk that filled up mid-save
    assert engine.reload_sequence() == good  # the newest that loads, not none at all
    engine.close()
    assert make_engine().recommender.sources["sequence"].loaded.version == good
