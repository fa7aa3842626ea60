"""The device check of the cross-encoder (benchmarks/cross_encoder_ranker.py), end to end on a CPU
at a tiny size, so a GPU loan is never spent on a broken script."""

import json

import pytest

from benchmarks import cross_encoder_ranker
from tests.retrieval.test_evaluation import synthetic_dataset

pytestmark = pytest.mark.slow


def test_the_ranker_with_and_without_the_cross_encoder_are_compared_on_every_slice(tmp_path, capsys):
    dataset = synthetic_dataset(length=8)
    folder = tmp_path / "synthetic"
    folder.mkdir()
    (folder / "Synthetic.item.json").write_text(json.dumps(
        {row["id"]: {"title": row["title"], "brand": row["brand"], "categories": ",".join(row["categories"])}
         for row in dataset.items}))
    (folder / "Synthetic.inter.json").write_text(json.dumps(dataset.sequences))

    code = cross_encoder_ranker.main(["--dataset", str(folder), "--max-users", "16", "--lists", "16", "--groups", "6",
                                      "--validation-users", "16", "--requests", "2", "--candidates", "10,20",
                                      "--device", "cpu", "--no-save", "--copy-to", str(tmp_path / "out")])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "| slice | users | retrieval (zero-shot) | ranker | ranker + cross-encoder | paired change |" in out
    assert "| all | 16 |" in out and "| cold_users | 16 |" in out
    assert "| ranker + cross-encoder, top 20 | 2 |" in out and "| ranker, top 10 | 2 |" in out
    assert "validation: ranker + cross-encoder" in out and "cross-encoder: 6 groups" in out
    assert "a measuring run, never served" in out
    # What the device tool brings back: every part, written as it ended (here, all of them).
    saved = json.loads((tmp_path / "out" / "cross_encoder_ranker.json").read_text())
    assert set(saved["slices"]) >= {"all", "cold_users"} and set(saved["latency"]) == {
        "ranker, top 10", "ranker + cross-encoder, top 10", "ranker, top 20", "ranker + cross-encoder, top 20"}
    assert not saved["training"]["accepted"] and saved["training"]["cross_encoder"]["compared"]
