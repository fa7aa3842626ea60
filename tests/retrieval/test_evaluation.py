"""The evaluation protocol: split invariants, determinism, and a tiny end-to-end run."""

import json
import random

import pytest

from retrieval.evaluation.datasets import Dataset, load_dataset
from retrieval.evaluation.replay import EvalConfig, cold_items, evaluate, leave_one_out, preference_text
from retrieval.evaluation.report import stage_section
from retrieval.evaluation.stages import StageSettings, evaluate_stages, training_part
from retrieval.pipeline.config import RecommendConfig
from retrieval.training.settings import EncoderTrainingSettings, SequenceTrainingSettings, TrainingSettings
from service.cli import main
from tests.conftest import SHARED_DATA


def test_leave_one_out_targets_never_leak_into_history():
    seqs = {"u1": ["a", "b", "c", "d"], "u2": ["x", "y"], "u3": ["z"]}
    test = leave_one_out(seqs, "test")
    assert (test["u1"].history, test["u1"].target) == (["a", "b", "c"], "d")
    assert (test["u2"].history, test["u2"].target) == (["x"], "y")
    assert "u3" not in test
    valid = leave_one_out(seqs, "valid")
    assert (valid["u1"].history, valid["u1"].target) == (["a", "b"], "c")
    assert "u2" not in valid
    for case in list(test.values()) + list(valid.values()):
        assert case.target not in case.history[len(case.history):]
        assert seqs[case.user_id].index(case.target) == len(case.history)


def test_cold_items_are_seeded_and_sized():
    items = [str(i) for i in range(200)]
    assert cold_items(items, 0.1, 1) == cold_items(items, 0.1, 1)
    assert cold_items(items, 0.1, 1) != cold_items(items, 0.1, 2)
    assert len(cold_items(items, 0.1, 1)) == 20


def test_preference_text_uses_only_history_categories():
    cats = {"a": ["Office", "Pens"], "b": ["Office", "Pens"], "c": ["Office", "Staplers"], "t": ["Office", "Desks"]}
    assert preference_text(["a", "b", "c"], cats) == "Interested in: Pens, Staplers"
    assert preference_text([], cats) is None


def synthetic_dataset(seed=3, length=6) -> Dataset:
    """Four themed groups of items; users stay in one theme, so sequences are predictable."""
    rng = random.Random(seed)
    themes = {"pens": "gel ink pen", "staplers": "heavy duty stapler", "lamps": "LED desk lamp", "chairs": "mesh office chair"}
    items, by_theme = [], {}
    for theme, noun in themes.items():
        for n in range(15):
            items.append({"id": f"{theme}-{n}", "title": f"{noun} model {n}", "categories": ["Office", theme.title()],
                          "brand": rng.choice(["Acme", "Bolt", "Cora"]), "price": float(5 + n)})
            by_theme.setdefault(theme, []).append(f"{theme}-{n}")
    sequences = {}
    for u in range(60):
        theme = list(themes)[u % 4]
        sequences[f"u{u}"] = rng.sample(by_theme[theme], length)
    return Dataset("synthetic", items, sequences)


@pytest.mark.slow
def test_tiny_end_to_end_run_is_deterministic_and_sensible(encoder, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the replays' scratch engines go
    dataset = synthetic_dataset()
    config = EvalConfig(seed=5, cold_item_fraction=0.2)
    first = evaluate(dataset, encoder, config)
    second = evaluate(dataset, encoder, config)
    assert not list(tmp_path.glob("hybridrec-eval-*"))  # each deleted after its run
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "timings")}  # noqa: E731
    assert json.dumps(strip(first), sort_keys=True) == json.dumps(strip(second), sort_keys=True)
    slices = first["slices"]
    assert set(slices) == {"all", "cold_items", "cold_users", "cold_users_prefs", "long_tail"}
    assert set(slices["all"]) == {"popularity", "itemknn", "bm25", "zero_shot", "dense_profile",
                                  "collaborative_seq", "hybrid_plain_rrf", "hybrid_retrieval"}
    # Users stay in one theme of 15 items: anything text-aware beats popularity across themes.
    assert slices["all"]["hybrid_retrieval"]["recall@10"] > slices["all"]["popularity"]["recall@10"]
    cold = slices["cold_items"]
    assert cold["hybrid_retrieval"]["users"] > 0
    assert cold["itemknn"]["recall@10"] == 0.0  # knows nothing of never-seen items
    assert cold["hybrid_retrieval"]["recall@10"] >= cold["hybrid_plain_rrf"]["recall@10"]
    for method in slices["all"].values():
        assert 0 <= method["ndcg@10"] <= method["recall@10"] <= method["recall@50"] <= 1
        assert 0 <= method["gini@10"] <= 1 and 0 < method["coverage@10"] <= 1


@pytest.mark.slow
def test_cli_writes_report_json_and_plots(tmp_path):
    dataset = synthetic_dataset()
    src = tmp_path / "ds"
    src.mkdir()
    with open(src / "items.jsonl", "w") as fh:
        fh.writelines(json.dumps(i) + "\n" for i in dataset.items)
    with open(src / "interactions.jsonl", "w") as fh:
        for user, seq in dataset.sequences.items():
            fh.writelines(json.dumps({"user_id": user, "item_id": i, "timestamp": t}) + "\n" for t, i in enumerate(seq))
    assert load_dataset(src).sequences == dataset.sequences
    out = tmp_path / "out"
    assert main(["evaluate", "--dataset", str(src), "--out", str(out), "--max-users", "20", "--seed", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["evaluated_users"] == 20 and results["config"]["seed"] == 1
    assert results["slices"]["all"]["bm25"]["users"] == 20
    report = (out / "report.md").read_text()
    assert "## All users" in report and "**" in report
    assert (out / "recall_at_k.png").stat().st_size > 1000 and (out / "accuracy_vs_diversity.png").exists()
    assert main(["evaluate", "--dataset", str(tmp_path / "missing"), "--out", str(out)]) == 2


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared amazon-office dataset not present")
def test_amazon_loader_on_the_shared_dataset():
    ds = load_dataset(SHARED_DATA)
    assert ds.stats() == {"items": 2420, "users": 4905, "interactions": 53258}
    assert all(len(seq) >= 5 for seq in ds.sequences.values())
    assert not any("&amp;" in item["title"] for item in ds.items)


def test_training_part_never_holds_a_validation_or_test_target():
    sequences = {"a": ["1", "2", "3", "4", "5"], "b": ["1", "2", "3"], "c": ["9", "8", "7", "6"]}
    part = training_part(sequences)
    assert part == {"a": ["1", "2", "3"], "c": ["9", "8"]}  # b would keep one item: nothing to learn
    for user, seq in part.items():
        assert sequences[user][-1] not in seq and sequences[user][-2] not in seq
    # The cold-items slice's items are new to the trainers too; a sequence left with one item goes.
    assert training_part(sequences, leave_out={"2", "8"}) == {"a": ["1", "3"]}
    # Fewer newest items held back (the freshness benchmark's logs): only the test target goes.
    assert training_part(sequences, newest=1) == {"a": ["1", "2", "3", "4"], "b": ["1", "2"], "c": ["9", "8", "7"]}


def test_a_stage_run_refuses_a_sequence_encoder_that_would_learn_the_rankers_steps(tmp_path):
    # Before any training: the ranker stage reads the sequence stage's encoder, as a feature or,
    # where it is accepted, through its source's lists.
    settings = StageSettings(sequence=SequenceTrainingSettings(left_out=1), work_dir=tmp_path / "models")
    with pytest.raises(ValueError, match="train_sequence.left_out=1: the ranker stage needs >= 3"):
        evaluate_stages(synthetic_dataset(), encoder=None, settings=settings)
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
@pytest.mark.parametrize("encoder_accepted", [True, False])
def test_stages_train_inside_the_run_and_report_each_stage(encoder, tmp_path, monkeypatch, encoder_accepted):
    from retrieval.evaluation import stages as evaluation_stages
    from retrieval.evaluation.replay import cold_slice_items
    from retrieval.training.protocol import log_sequences

    real_train_encoder = evaluation_stages.train_encoder
    seen_by_trainer: set[str] = set()

    def train_encoder(engine, *args, **kwargs):  # the real training, with the verdict this case needs
        seen_by_trainer.update(i for seq in log_sequences(engine.log, engine.index).values() for i in seq)
        return {**real_train_encoder(engine, *args, **kwargs), "accepted": encoder_accepted}

    monkeypatch.setattr(evaluation_stages, "train_encoder", train_encoder)
    dataset = synthetic_dataset(length=8)  # 6 in training, 3 of them left out of the sequence encoder's
    config = EvalConfig(seed=2, max_users=8, recommend=RecommendConfig(rerank_candidates=10))
    settings = StageSettings(EncoderTrainingSettings(max_pairs=80, batch_size=16, device="cpu"),
                             TrainingSettings(max_lists=40, cross_encoder="off", device="cpu", max_validation_users=6),
                             SequenceTrainingSettings(epochs=2, hidden=16, device="cpu", max_validation_users=6),
                             work_dir=tmp_path / "models")
    stages = evaluate_stages(dataset, encoder, config, settings, slices=("all", "cold_users"))
    assert set(stages["table"]) == {"all", "cold_users"}
    # The cold-items slice's items are as new to the trainers as to the slice.
    cold = cold_slice_items(dataset, config)
    assert cold and seen_by_trainer and not seen_by_trainer & cold
    assert stages["cold_items_left_out_of_training"] == len(cold)
    # Each stage against the one it builds on; with an accepted encoder, also the ranker that would
    # serve without it (trained the same way over zero-shot retrieval) against the ranker that does.
    # Zero-shot at the encoder's weights stands beside the encoder: its change is minus the encoder's part.
    # The sequence encoder joins the encoder stage's retrieval; the reranker builds on the last accepted stage.
    sequence_accepted = stages["sequence_training"]["accepted"]
    encoder_stage = "fine_tuned_encoder" if encoder_accepted else "zero_shot"
    builds_on = {"fine_tuned_encoder": "zero_shot", "zero_shot_at_encoder_weights": "fine_tuned_encoder",
                 "sequence_encoder": encoder_stage, "sequence_encoder_alone": "sequence_encoder",
                 "reranker": "sequence_encoder" if sequence_accepted else encoder_stage,
                 "reranker_retrieval_diversity": "reranker", "reranker_without_encoder": "reranker"}
    for row in stages["table"].values():
        # The reranker also at retrieval's diversity, beside its own default (0, chosen on validation).
        assert list(row) == ["zero_shot", "fine_tuned_encoder", "zero_shot_at_encoder_weights", "sequence_encoder",
                             "sequence_encoder_alone", "reranker", "reranker_retrieval_diversity",
                             *(["reranker_without_encoder"] if encoder_accepted else [])]
        assert all(m["users"] == 8 and 0.0 <= m["ndcg@10"] <= 1.0 for m in row.values())
        assert "change" not in row["zero_shot"]
        for stage, base in builds_on.items():
            if stage in row:
                change = row[stage]["change"]
                assert change["vs"] == base and change["standard_error"] >= 0
                # The mean of the user-by-user differences is the difference of the means.
                assert change["ndcg@10"] == pytest.approx(row[stage]["ndcg@10"] - row[base]["ndcg@10"])
    enc, rr = stages["encoder_training"], stages["reranker_training"]
    assert 0 < enc["pairs"] <= 80 and enc["validation"]["users"] > 0
    assert enc["pairs_kind"] == "item -> next item"  # the default method
    assert 0 < rr["ranker"]["lists"] <= 40 and rr["version"] is not None and not rr["cross_encoder"]["trained"]
    # The models are kept with their verdicts where the settings asked.
    assert (tmp_path / "models" / "encoder" / enc["version"] / "metadata.json").exists()
    assert (tmp_path / "models" / "reranker" / rr["version"] / "metadata.json").exists()
    seq = stages["sequence_training"]
    assert (tmp_path / "models" / "sequence" / seq["version"] / "metadata.json").exists()
    assert seq["epochs"] and set(seq["validation"]) == {"all", "cold_items", "cold_users", "long_tail"}
    assert stages["accepted"]["sequence_encoder"] == sequence_accepted
    without = stages.get("reranker_without_encoder_training")
    assert (without is not None) == encoder_accepted
    if without:
        assert (tmp_path / "models" / "reranker_without_encoder" / without["version"] / "metadata.json").exists()
    assert stages["serving"]["encoder"] == ("fine-tuned" if encoder_accepted else "zero-shot")
    # Each stage's verdict, from the trainer behind it; the report marks the rejected ones.
    assert stages["accepted"]["fine_tuned_encoder"] == encoder_accepted
    assert stages["accepted"]["reranker"] == rr["accepted"] and stages["accepted"]["zero_shot_at_encoder_weights"]
    assert set(stages["accepted"]) == set(stages["table"]["all"])
    report = "\n".join(stage_section(stages))
    assert "+ fine-tuned encoder" in report and "| all | 8 |" in report and "learned ranker on" in report
    assert "+ sequence encoder" in report and "- Sequence encoder: " in report
    # Peers measured in the same run stand in the same table, with what they cannot do said below it.
    peer = {"users": 8, "ndcg@10": 0.0123, "recall@10": 0.25}
    with_peers = "\n".join(stage_section(stages, {"slices": {s: {"peer_sasrec": peer} for s in stages["table"]},
                                                   "peers": {"notes": {"cold_items": "never saw these items"}}}))
    header = next(line for line in with_peers.splitlines() if line.startswith("| slice |"))
    assert header.endswith("| peer: sasrec |") and "| 0.0123 / 0.2500 |" in with_peers
    assert "cold_items: never saw these items" in with_peers
    assert " ± " in report and ("reranker over zero-shot" in report) == encoder_accepted
    assert "zero-shot at the encoder's weights" in report
    assert ("+ fine-tuned encoder (rejected, measured anyway)" in report) == (not encoder_accepted)
    assert stages["diversity"] == {"retrieval": 0.3, "reranked": 0.0}
    assert "reranker at retrieval's diversity" in report and "reranked lists 0" in report


def test_cli_rejects_unknown_methods(tmp_path, capsys):
    src = tmp_path / "ds"
    src.mkdir()
    (src / "items.jsonl").write_text(json.dumps({"id": "a", "title": "A pen"}) + "\n")
    (src / "interactions.jsonl").write_text(json.dumps({"user_id": "u", "item_id": "a", "timestamp": 1}) + "\n")
    assert main(["evaluate", "--dataset", str(src), "--out", str(tmp_path / "o"), "--methods", "sasrec"]) == 2
    assert "--methods: unknown sasrec" in capsys.readouterr().err
    # A trained model's rows come from --stages, never from --methods alone.
    assert main(["evaluate", "--dataset", str(src), "--out", str(tmp_path / "o"), "--methods", "sequence_encoder"]) == 2
    assert "--methods: unknown sequence_encoder" in capsys.readouterr().err
