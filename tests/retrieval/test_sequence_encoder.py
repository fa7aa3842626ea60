"""The sequence encoder from the event log to the response: trained and judged by
``train_sequence`` (resumable), served only when accepted and trained over today's item vectors,
named in traces, responses and explanations, and reaching items added after it was trained."""

import json
import random
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from litestar.testing import TestClient

from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.training.sequence import train_sequence, training_windows
from retrieval.training.settings import SequenceTrainingSettings
from service.app import create_app
from service.cli import main
from service.settings import Settings

pytestmark = pytest.mark.slow

SMALL = SequenceTrainingSettings(epochs=40, patience=40, hidden=32, max_length=8, dropout=0.0, lr=3e-3,
                                 max_validation_users=60, early_stop_users=0.2, device="cpu")


def chain_log(engine, demo_items, users: int = 120, length: int = 6, seed: int = 0) -> list[str]:
    """Users take runs of a fixed, shuffled chain of 60 items: what comes next is in the order only."""
    rng = random.Random(seed)
    chain = [item["id"] for item in demo_items[:60]]
    rng.shuffle(chain)
    now = time.time()
    events = []
    for u in range(users):
        start = rng.randrange(len(chain))
        events += [{"user_id": f"u{u}", "type": "purchase", "item_id": chain[(start + t) % len(chain)],
                    "timestamp": now - 100 + t} for t in range(length)]
    report = engine.profiles.record(events, now=now)
    assert not report.rejected
    return chain


def timeless(epochs: list[dict]) -> list[dict]:
    """Training epochs as they repeat: without their wall-clock seconds."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def accept(engine, version: str) -> None:
    """Mark a version accepted (what its verdict decides is tested elsewhere; here: serving)."""
    path = engine.sequences.path(version) / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accepted": True}))


def test_training_windows_cover_every_step_once():
    windows = training_windows({"u": list("abcdefgh"), "v": ["x", "y"], "w": ["z"]}, 3)
    steps = [(w[n], w[n + 1]) for w in windows for n in range(len(w) - 1)]
    assert sorted(steps) == sorted([(a, b) for a, b in zip("abcdefg", "bcdefgh")] + [("x", "y")])
    assert all(len(w) <= 4 for w in windows)


def test_the_same_log_trains_the_same_model(engine, demo_items, tmp_path):
    from retrieval.registry import SequenceVersions

    chain_log(engine, demo_items)
    settings = replace(SMALL, epochs=3, patience=3)
    first, second = (train_sequence(engine, SequenceVersions(tmp_path / name), settings) for name in ("a", "b"))
    assert timeless(first["epochs"]) == timeless(second["epochs"]) and first["validation"] == second["validation"]
    a, b = (torch.load(tmp_path / name / meta["version"] / "sequence.pt", weights_only=True)
            for name, meta in (("a", first), ("b", second)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_it_learns_the_order_is_judged_per_slice_and_resumes_after_an_interruption(engine, demo_items):
    chain_log(engine, demo_items, length=10)  # 6 steps a user trained on, 3 newest items left out

    class Interrupt:  # a progress bar whose third update is a Ctrl-C: two epochs are done by then
        def __init__(self, *_):
            self.updates = 0

        def update(self, n):
            self.updates += 1
            if self.updates == 4:  # the first call restores progress (0), then one batch per epoch
                raise KeyboardInterrupt

        def close(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        train_sequence(engine, engine.sequences, SMALL, progress_factory=Interrupt)
    saved = torch.load(engine.sequences.checkpoint, weights_only=False)
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]

    meta = train_sequence(engine, engine.sequences, SMALL)
    # It went on from the checkpoint: the first two epochs are the interrupted run's, to the bit,
    # and the rest are what an uninterrupted run trains.
    assert meta["epochs"][:2] == saved["epochs"] and len(meta["epochs"]) == SMALL.epochs
    from retrieval.registry import SequenceVersions
    whole = train_sequence(engine, SequenceVersions(engine.sequences.root.parent / "uninterrupted"), SMALL)
    assert timeless(meta["epochs"]) == timeless(whole["epochs"]) and meta["validation"] == whole["validation"]
    assert not (engine.sequences.checkpoint).exists()
    # The chain is learnt: the source alone finds the next item (chance is about 1 in 360).
    assert meta["sequence_alone_ndcg@10"] > 0.5
    assert set(meta["validation"]) == {"all", "cold_items", "cold_users", "long_tail"}
    assert meta["validation"]["all"]["cases"] == 60 and meta["item_space"] == engine.item_space()
    assert meta["fusion_weight"] in SMALL.fusion_weights and "on 60 users' newest items" in meta["reason"]
    assert (engine.sequences.path(meta["version"]) / "sequence.pt").exists()


def test_an_interrupted_training_resumes_only_on_the_same_log_and_a_forget_deletes_its_checkpoint(
        engine, demo_items, caplog):
    import logging
    from dataclasses import replace

    chain_log(engine, demo_items, length=10)
    quick = replace(SMALL, epochs=4, patience=4)

    class Interrupt:  # Ctrl-C after the first epoch
        def __init__(self, *_):
            self.updates = 0

        def update(self, n):
            self.updates += 1
            if self.updates == 3:
                raise KeyboardInterrupt

        def close(self):
            pass

    def interrupted():
        with pytest.raises(KeyboardInterrupt):
            train_sequence(engine, engine.sequences, quick, progress_factory=Interrupt)
        assert engine.sequences.checkpoint.exists()

    interrupted()
    engine.sequences.checkpoint.write_bytes(b"cut short")  # damaged: the run starts over instead of failing
    with caplog.at_level(logging.INFO, logger="hybridrec.training"):
        assert len(train_sequence(engine, engine.sequences, quick)["epochs"]) == 4
    assert "unreadable" in caplog.text and not engine.sequences.checkpoint.exists()
    interrupted()
    caplog.clear()
    # Events logged meanwhile: the next run trains on another log, so starts over.
    engine.profiles.record([{"user_id": "late", "type": "click", "item_id": demo_items[200]["id"]},
                            {"user_id": "late", "type": "click", "item_id": demo_items[201]["id"]}])
    with caplog.at_level(logging.INFO, logger="hybridrec.training"):
        resumed = train_sequence(engine, engine.sequences, quick)
    assert "training starts over" in caplog.text and len(resumed["epochs"]) == 4
    interrupted()
    assert engine.forget_user("u3").forgotten and not engine.sequences.checkpoint.exists()


def test_only_an_accepted_model_over_todays_items_serves_and_new_items_are_reachable(engine, demo_items, tmp_path):
    chain = chain_log(engine, demo_items, length=10)  # 6 steps a user trained on, 3 newest items left out
    meta = train_sequence(engine, engine.sequences, SMALL)
    version = meta["version"]
    path = engine.sequences.path(version) / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accepted": False}))
    assert engine.reload_sequence() is None
    with pytest.raises(ValueError, match="never served"):
        engine.sequences.load(version, engine.item_space())
    accept(engine, version)
    # Trained over other item vectors (another encoder or collection): refused, with what to do.
    with pytest.raises(ValueError, match="hybridrec train sequence"):
        engine.sequences.load(version, {**engine.item_space(), "collection": "items__other"})
    assert engine.reload_sequence() == version

    history = chain[10:14]
    alone = engine.recommender.recommend(RecommendRequest(history=history, k=5, diversity=0),
                                         ReplayOptions(sources=("sequence",)))
    assert alone.items[0].id == chain[14]  # what follows in the chain
    served = engine.recommender.recommend(RecommendRequest(history=history, k=10, diversity=0))
    assert served.sequence == version and "sequence" in served.sources
    assert any("sequence" in item.trace.sources for item in served.items)

    # An item added now, never seen in training, with the next item's very text: the source finds it
    # beside its twin, from its text alone.
    twin = dict(next(i for i in demo_items if i["id"] == chain[14]), id="brand-new-twin")
    assert not engine.catalogue.upsert([twin]).rejected
    again = engine.recommender.recommend(RecommendRequest(history=history, k=5, diversity=0),
                                         ReplayOptions(sources=("sequence",)))
    assert {i.id for i in again.items[:2]} == {chain[14], "brand-new-twin"}

    # Over HTTP: reload reports it, responses and explanations name it.
    engine.serve_sequence(None)
    with TestClient(create_app(Settings(data_dir=tmp_path / "unused"), engine=engine)) as client:
        assert client.post("/v1/recommendations", json={"history": history, "k": 5}).json()["models"]["sequence"] is None
        assert client.post("/v1/admin/reload").json()["sequence"] == version
        body = client.post("/v1/recommendations", json={"history": history, "k": 5, "diversity": 0}).json()
        assert body["models"]["sequence"] == version and "sequence" in body["sources"]
        found = next(i for i in body["items"] if "sequence" in i["sources"])
        explained = client.post("/v1/explanations", json={"history": history, "item_id": found["id"],
                                                          "diversity": 0}).json()
        assert "sequence" in explained["evidence"]["sources"]
        assert "sequence encoder" in explained["text"]
        models = client.get("/v1/admin/models").json()
        assert models["sequence"] == version and models["sequences"][0]["version"] == version


def test_train_sequence_from_the_command_line(engine, demo_items, tmp_path, capsys):
    chain_log(engine, demo_items)
    data_dir = engine.config.data_dir
    engine.close()
    assert main(["train", "sequence", "--data-dir", str(data_dir), "--epochs", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    versions = sorted((data_dir / "models" / "sequence").glob("v*"))
    assert len(versions) == 1
    meta = json.loads((versions[0] / "metadata.json").read_text())
    assert f"sequence encoder {meta['version']} {'accepted' if meta['accepted'] else 'rejected'}" in out
    assert "validation all" in out and "validation cold_users" in out and "trained 2 epochs" in out


def test_a_ranker_reads_a_sequence_encoder_refused_as_a_source_and_carries_it(engine, demo_items, tmp_path):
    from retrieval.ranking.features import SEQUENCE_COLUMN
    from retrieval.training.reranker import train_reranker
    from retrieval.training.settings import TrainingSettings

    chain = chain_log(engine, demo_items)
    leaky = train_sequence(engine, engine.sequences, replace(SMALL, left_out=1))  # every step but the newest
    leaky = engine.sequences.load(leaky["version"], engine.item_space(), device="cpu", allow_rejected=True)
    with pytest.raises(ValueError, match="left_out >= 3"):
        train_reranker(engine.recommender, engine.rerankers,
                       TrainingSettings(candidates=20, cross_encoder="off", device="cpu", sequence="auto"), sequence=leaky)
    meta = train_sequence(engine, engine.sequences, SMALL)  # by default without the ranker's steps
    assert meta["settings"]["left_out"] == 3
    path = engine.sequences.path(meta["version"]) / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accepted": False}))  # refused as a source
    offered = engine.sequences.load(meta["version"], engine.item_space(), device="cpu", allow_rejected=True)
    settings = TrainingSettings(validation_users=0.3, candidates=20, cross_encoder="off", device="cpu")

    # "only" keeps the variant that reads it, to measure it; the comparison with the plain ranker is
    # on record either way.
    report = train_reranker(engine.recommender, engine.rerankers, replace(settings, sequence="only"), sequence=offered)
    saved = {m["version"]: m for m in engine.rerankers.all()}[report.version]
    assert saved["ranker"]["variant"].startswith("ranker+sequence") and saved["ranker"]["sequence"]
    compared = saved["sequence"]["variants"]["ranker+sequence"]
    assert compared["against"] == "ranker" and set(saved["validation"]) >= {"ranker", "ranker+sequence"}
    assert saved["sequence"]["version"] == meta["version"] and not saved["sequence"]["accepted_as_source"]
    assert (engine.rerankers.path(report.version) / "sequence" / "sequence.pt").exists()

    loaded = engine.rerankers.load(report.version, device="cpu", allow_rejected=True, item_space=engine.item_space())
    assert loaded.sequence is not None and loaded.ranker.uses_sequence
    assert "sequence encoder" in loaded.description
    with pytest.raises(ValueError, match="hybridrec train reranker"):
        engine.rerankers.load(report.version, allow_rejected=True,
                              item_space={**engine.item_space(), "collection": "items__other"})

    # Serving: the ranker reads the similarity although no sequence source serves.
    seen = []
    score = loaded.ranker.score
    loaded.ranker.score = lambda features: seen.append(features) or score(features)
    engine.recommender.reranker = loaded
    assert engine.recommender.sources["sequence"].loaded is None
    served = engine.recommender.recommend(RecommendRequest(history=chain[10:14], k=5, diversity=0))
    assert served.reranker == report.version and "sequence" not in served.sources
    assert seen and not np.isnan(seen[0][:, SEQUENCE_COLUMN]).any()

    # Off (the default): the encoder given is not read at all.
    off = train_reranker(engine.recommender, engine.rerankers, settings, sequence=offered)
    assert off.metadata["sequence"] is None and not off.metadata["ranker"]["sequence"]
    # "auto": the variant competes only where it is clearly better than the plain one (``choose``'s
    # own test checks the rule; here, that the trainer records it and serves what it chose).
    auto = train_reranker(engine.recommender, engine.rerankers, replace(settings, sequence="auto"), sequence=offered)
    judged = auto.metadata["sequence"]["variants"]["ranker+sequence"]
    assert set(judged) >= {"against", "gain", "standard_error", "competes"} and judged["against"] == "ranker"
    assert judged["competes"] == (judged["gain"] > 0 and judged["gain"] > judged["standard_error"]
                                  and judged["gain"] >= 0.01 * judged["without"])

    # After a reindex its sequence encoder would read other item vectors: it is dropped, and the
    # newest accepted ranker that fits the new items (a plain one) serves instead.
    for version in (report.version, off.version):
        ranker_meta = engine.rerankers.path(version) / "metadata.json"
        ranker_meta.write_text(json.dumps({**json.loads(ranker_meta.read_text()), "accepted": True}))
    engine.recommender.reranker = engine.rerankers.load(report.version, device="cpu")
    from retrieval.reindex import reindex
    reindex(engine, engine.encoder, encoder_path=None, batch_size=100)
    assert engine.recommender.reranker is not None and engine.recommender.reranker.version == off.version
    assert engine.serve_reranker(report.version) == off.version  # refused for its item space, not its verdict
    assert engine.reload_reranker() == off.version


def test_a_ranker_learns_a_sequence_source_only_from_steps_its_encoder_never_learned(engine, demo_items,
                                                                                     monkeypatch):
    from retrieval.pipeline.recommender import Recommender
    from retrieval.training.reranker import train_reranker
    from retrieval.training.settings import TrainingSettings

    chain_log(engine, demo_items)
    settings = TrainingSettings(validation_users=0.3, candidates=20, cross_encoder="off", device="cpu")
    leaky = train_sequence(engine, engine.sequences, replace(SMALL, left_out=1))["version"]
    accept(engine, leaky)
    assert engine.reload_sequence() == leaky
    with pytest.raises(ValueError, match=f"{leaky} \\(serving as the sequence source\\).*learned 2 of the 2 "
                                         "steps.*left_out >= 3.*need not be accepted.*HYBRIDREC_RECOMMEND__SOURCES"):
        train_reranker(engine.recommender, engine.rerankers, settings)
    assert engine.rerankers.all() == []  # refused before anything was trained or saved
    # Where the pipeline never asks it for a past moment (a history without a user), nothing leaks.
    config = engine.recommender.config
    engine.recommender.config = replace(config, request_weights={"session": {"sequence": 0.0}})
    assert not engine.recommender.asks("sequence", "session") and engine.recommender.asks("sequence", "history")
    quiet = train_reranker(engine.recommender, engine.rerankers, settings)
    assert quiet.version is not None and quiet.metadata["sequence_source"] is None
    engine.recommender.config = config

    # An encoder trained without the ranker's steps (the default), refused as a source, stands in
    # for the serving one on the training lists; validation reads the one that serves.
    stand_in = train_sequence(engine, engine.sequences, SMALL)["version"]
    path = engine.sequences.path(stand_in) / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accepted": False}))
    loaded = engine.sequences.load(stand_in, engine.item_space(), device="cpu", allow_rejected=True)
    traced = []
    recommend = Recommender.recommend
    monkeypatch.setattr(Recommender, "recommend", lambda *a, **k: traced.append(r := recommend(*a, **k)) or r)
    report = train_reranker(engine.recommender, engine.rerankers, settings, stand_in=loaded)
    assert report.version is not None
    assert report.metadata["sequence_source"] == {"version": leaky, "left_out": 1, "training_lists": stand_in}
    read = [r.sequence for r in traced if "sequence" in r.sources]
    assert read[0] == stand_in and read[-1] == leaky and set(read) == {stand_in, leaky}
    assert engine.recommender.sources["sequence"].loaded.version == leaky  # never swapped
    with pytest.raises(ValueError, match="standing in"):
        leaky_too = engine.sequences.load(leaky, engine.item_space(), device="cpu")
        train_reranker(engine.recommender, engine.rerankers, settings, stand_in=leaky_too)

    # The default encoder never learned the ranker's steps: serving, it needs no stand-in.
    accept(engine, stand_in)
    assert engine.reload_sequence() == stand_in
    report = train_reranker(engine.recommender, engine.rerankers, settings)
    assert report.metadata["sequence_source"] == {"version": stand_in, "left_out": 3, "training_lists": stand_in}


def test_train_reranker_from_the_command_line_offers_the_newest_sequence_encoder(engine, demo_items, capsys,
                                                                                monkeypatch):
    chain_log(engine, demo_items)
    data_dir = engine.config.data_dir
    common = ["train", "reranker", "--data-dir", str(data_dir), "--cross-encoder", "off", "--device", "cpu",
              "--max-lists", "200"]
    engine.close()
    assert main([*common, "--sequence", "auto"]) == 2  # none trained yet: says so, trains nothing
    assert "hybridrec train sequence" in capsys.readouterr().err
    monkeypatch.setenv("HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT", "1")
    assert main(["train", "sequence", "--data-dir", str(data_dir), "--epochs", "2", "--device", "cpu"]) == 0
    monkeypatch.delenv("HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT")
    capsys.readouterr()
    leaky = json.loads(next((data_dir / "models" / "sequence").glob("v*/metadata.json")).read_text())["version"]
    capsys.readouterr()
    assert main([*common, "--sequence", "auto"]) == 2  # it learned the steps the ranker trains on: not picked
    assert "HYBRIDREC_TRAIN_SEQUENCE__LEFT_OUT=3" in capsys.readouterr().err
    assert main([*common, "--sequence", "auto", "--sequence-version", leaky]) == 2  # named: refused by the trainer
    assert "train_sequence.left_out >= 3" in capsys.readouterr().err
    assert main([*common, "--sequence-version", leaky]) == 2  # a version without --sequence means nothing
    assert "--sequence-version needs --sequence auto or only" in capsys.readouterr().err
    assert main(["train", "sequence", "--data-dir", str(data_dir), "--epochs", "2", "--device", "cpu"]) == 0
    version = json.loads(sorted((data_dir / "models" / "sequence").glob("v*/metadata.json"))[-1].read_text())["version"]
    capsys.readouterr()
    assert main([*common, "--sequence", "auto"]) == 0
    out = capsys.readouterr().out
    assert f"sequence encoder {version} offered as a feature" in out and "ranker+sequence:" in out
    assert main(common) == 0  # off by default
    assert "offered as a feature" not in capsys.readouterr().out
    assert main([*common, "--sequence", "only", "--sequence-version", "v19990101-000000"]) == 2
    assert "--sequence-version v19990101-000000" in capsys.readouterr().err
    # The leaky one serving as the source: the newest encoder without the ranker's steps stands in
    # for it on the training lists, accepted as a source or not.
    for name, accepted in ((leaky, True), (version, False)):
        path = data_dir / "models" / "sequence" / name / "metadata.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "accepted": accepted}))
    assert main(common) == 0
    assert f"sequence encoder {version} stood in for {leaky}" in capsys.readouterr().out
