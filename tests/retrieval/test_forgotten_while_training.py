"""A user forgotten while a trainer reads the log: their forget answered before the model existed,
so could not name it among the models to retrain; the model is saved rejected and never serves."""

from retrieval.training.protocol import forgotten_since_read
from retrieval.training.reranker import train_reranker
from retrieval.training.settings import TrainingSettings
from tests.conftest import TEST_DEVICE
from tests.retrieval.test_reranking import category_log


def clicks(user, items):
    return [{"user_id": user, "type": "click", "item_id": i} for i in items]


def test_which_users_read_up_to_a_point_have_been_forgotten_since(engine, demo_points):
    ids = [p.id for p in demo_points]
    engine.profiles.record(clicks("stays", ids[:3]) + clicks("leaves", ids[3:6]) + clicks("returns", ids[6:9]))
    read, through = engine.index.user_ids(), engine.log.max_seq()
    assert forgotten_since_read(engine.log, read, through) == 0
    engine.forget_user("leaves")
    engine.forget_user("returns")
    engine.profiles.record(clicks("returns", ids[9:11]) + clicks("stays", ids[11:12]))  # back, with new events only
    assert forgotten_since_read(engine.log, read, through) == 2
    # A trainer that started after the forgets read none of what was forgotten.
    assert forgotten_since_read(engine.log, engine.index.user_ids(), engine.log.max_seq()) == 0


def test_a_ranker_that_learned_from_a_user_forgotten_while_it_trained_never_serves(engine, demo_items, monkeypatch):
    import retrieval.training.reranker as trainer

    category_log(engine, demo_items)
    built, original = [], trainer.build_list

    def forgetting_midway(*args, **kwargs):
        if not built:
            engine.forget_user("u7")  # a request to another instance, while the lists are built
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "build_list", forgetting_midway)
    report = train_reranker(engine.recommender, engine.rerankers,
                            TrainingSettings(validation_users=0.2, candidates=20, cross_encoder="off", device=TEST_DEVICE))
    assert report.version is not None and not report.accepted
    assert report.reason.startswith("1 user(s) it learned from were forgotten while it trained")
    meta = {m["version"]: m for m in engine.rerankers.all()}[report.version]
    assert meta["forgotten_while_training"] == 1 and not meta["accepted"]
    assert engine.reload_reranker() is None
    monkeypatch.setattr(trainer, "build_list", original)
    again = train_reranker(engine.recommender, engine.rerankers,
                           TrainingSettings(validation_users=0.2, candidates=20, cross_encoder="off", device=TEST_DEVICE))
    assert again.metadata["forgotten_while_training"] == 0 and "forgotten" not in again.reason
