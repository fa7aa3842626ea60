"""The peers (RecBole's SASRec) on a tiny, strongly sequential synthetic log: evaluate's shape, the
slices' caveats, and a ranking far above chance.

RecBole is the optional extra ``peers``; ``make install`` installs it, so CI (CI=true) runs these
tests and fails if it is missing. Elsewhere they are skipped when it is absent.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys

import pytest

from retrieval.evaluation.datasets import Dataset
from retrieval.evaluation.replay import SLICES, EvalConfig, cold_slice_items, leave_one_out

HAVE_RECBOLE = importlib.util.find_spec("recbole") is not None
if not HAVE_RECBOLE and os.environ.get("CI"):
    pytest.fail("RecBole is missing in CI: `make install` installs the peers extra (pip install -e '.[peers]')",
                pytrace=False)
needs_recbole = pytest.mark.skipif(not HAVE_RECBOLE, reason="RecBole absent: pip install -e '.[peers]' "
                                                            "(make install does)")

ITEMS, USERS, LENGTH = 80, 100, 6  # 600 events


def cyclic_dataset(seed: int = 0) -> Dataset:
    """Each user walks the catalogue in order from a random start: the next item is always the
    current one plus one, which a sequential model learns and chance (1 in ~75) does not."""
    rng = random.Random(seed)
    items = [{"id": f"i{n}", "title": f"item {n}"} for n in range(ITEMS)]
    sequences = {}
    for u in range(USERS):
        start = rng.randrange(ITEMS)
        sequences[f"u{u}"] = [f"i{(start + k) % ITEMS}" for k in range(LENGTH)]
    return Dataset("cyclic", items, sequences)


@pytest.fixture(scope="module")
def sasrec(tmp_path_factory):
    from retrieval.evaluation.peers import PeerSettings, evaluate_peers

    dataset = cyclic_dataset()
    config = EvalConfig(seed=1)
    settings = PeerSettings(epochs=1, batch_size=16, learning_rate=0.01, show_progress=False,
                            work_dir=tmp_path_factory.mktemp("peers"),
                            model={"sasrec": {"hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1}})
    return dataset, config, evaluate_peers(dataset, config, peers=("sasrec",), settings=settings)


@needs_recbole
def test_same_shape_and_users_as_evaluate(sasrec):
    dataset, config, out = sasrec
    cases = leave_one_out(dataset.sequences, config.split)
    cold = cold_slice_items(dataset, config)
    users = sorted(cases)
    expected = {"all": len(users), "cold_users": len(users), "cold_users_prefs": len(users),
                "cold_items": sum(1 for u in users if cases[u].target in cold
                                  and any(i not in cold for i in cases[u].history))}
    assert set(out["slices"]) == set(SLICES) == set(out["ranks"])
    for s in SLICES:
        row = out["slices"][s]["peer_sasrec"]
        assert row["users"] == len(out["ranks"][s]["peer_sasrec"])
        if s in expected:
            assert row["users"] == expected[s], s
        assert {"recall@10", "ndcg@10", "ndcg@50", "mrr", "coverage@10"} <= set(row)
    training = out["peers"]["peer_sasrec"]
    assert training["model"] == "SASRec" and training["package"].startswith("recbole ")
    assert training["epochs_run"] == 1
    # Training never saw a cold-slice item, so it can never rank a cold-slice target.
    assert all(r is None for r in out["ranks"]["cold_items"]["peer_sasrec"])
    # No history: the ID model falls back to popularity for every user, and says so.
    assert out["fallback_users"]["cold_users_prefs"]["peer_sasrec"] == len(users)
    assert "popularity" in out["notes"]["cold_users_prefs"]


@needs_recbole
def test_sasrec_learns_the_sequence(sasrec):
    _, _, out = sasrec
    row = out["slices"]["all"]["peer_sasrec"]
    chance = 10 / (ITEMS - LENGTH)  # Recall@10 of a random ranking of the catalogue minus the history
    assert row["recall@10"] > 4 * chance, row
    assert row["ndcg@10"] > 0.3, row
    # Popularity alone (the no-history fallback) does no better than chance on a uniform cycle.
    assert out["slices"]["cold_users_prefs"]["peer_sasrec"]["recall@10"] < 2 * chance


def test_a_missing_recbole_names_the_extra(monkeypatch):
    from retrieval.evaluation import peers

    monkeypatch.setitem(sys.modules, "recbole", None)  # import recbole -> ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[peers\]'"):
        peers.require_recbole()
    with pytest.raises(ImportError, match="peers"):
        peers.evaluate_peers(cyclic_dataset(), EvalConfig(), peers=("sasrec",))


def test_unknown_peer_is_refused():
    from retrieval.evaluation.peers import evaluate_peers

    with pytest.raises(ValueError, match="unknown peers"):
        evaluate_peers(cyclic_dataset(), EvalConfig(), peers=("bert4rec",))


def write_generic(dataset: Dataset, folder) -> None:
    import json

    folder.mkdir()
    with open(folder / "items.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(item) + "\n" for item in dataset.items)
    with open(folder / "interactions.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"user_id": u, "item_id": i, "timestamp": t}) + "\n"
                      for u, seq in dataset.sequences.items() for t, i in enumerate(seq))


def test_evaluate_refuses_bad_peers_before_any_work(tmp_path, monkeypatch, capsys):
    from service.cli import main

    write_generic(cyclic_dataset(), tmp_path / "data")
    args = ["evaluate", "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    assert main([*args, "--peers", "sasrec,bert4rec"]) == 2
    assert "unknown bert4rec" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "recbole", None)
    assert main([*args, "--peers", "sasrec"]) == 2
    assert "pip install -e '.[peers]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
