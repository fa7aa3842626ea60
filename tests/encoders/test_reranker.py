"""The cross-encoder: a tiny training run moves scores the right way; save/load is exact."""

import numpy as np
import pytest

from encoders.cross_encoder import CrossEncoderReranker
from encoders.training import RerankGroup, train_listwise
from tests.conftest import TEST_DEVICE

pytestmark = pytest.mark.slow

CONTEXTS = [f"Recently: {c} fountain pen (Pens)." for c in ("blue", "black", "green", "red", "steel", "gold")]
POSITIVE = "Ink cartridges for fountain pens, pack of 20. Category: Pens."
NEGATIVES = ("Mesh office chair with lumbar support. Category: Office Chairs.",
             "LED desk lamp, dimmable. Category: Desk Lamps.", "Laser printer toner. Category: Toner.")


def margin(reranker):
    pos = reranker.score(CONTEXTS, [POSITIVE] * len(CONTEXTS))
    neg = np.mean([reranker.score(CONTEXTS, [n] * len(CONTEXTS)) for n in NEGATIVES], axis=0)
    return float(np.mean(pos - neg))


def test_training_moves_scores_the_right_way_and_save_load_is_exact(tmp_path):
    reranker = CrossEncoderReranker(device=TEST_DEVICE, max_length=64)
    before = margin(reranker)
    groups = [RerankGroup(c, POSITIVE, NEGATIVES) for c in CONTEXTS] * 4
    reports = train_listwise(reranker, groups, epochs=3, groups_per_batch=4, lr=1e-4, seed=1)
    assert len(reports) == 3 and reports[-1].loss < reports[0].loss and reports[0].pairs == 24 * 4
    after = margin(reranker)
    assert after > before + 0.3
    pos = reranker.score(CONTEXTS, [POSITIVE] * len(CONTEXTS))
    for negative in NEGATIVES:
        assert (pos > reranker.score(CONTEXTS, [negative] * len(CONTEXTS))).all()
    reranker.save(tmp_path / "m")
    loaded = CrossEncoderReranker(tmp_path / "m", device=TEST_DEVICE, max_length=64)
    pairs = (CONTEXTS, [POSITIVE] * len(CONTEXTS))
    assert np.allclose(loaded.score(*pairs), reranker.score(*pairs), atol=1e-5)


def test_training_needs_groups_and_pairs_must_match():
    reranker = CrossEncoderReranker(device=TEST_DEVICE, max_length=32)
    with pytest.raises(ValueError, match="no training groups"):
        train_listwise(reranker, [])
    with pytest.raises(ValueError, match="pair up"):
        reranker.score(["a"], ["b", "c"])


def test_scores_come_back_in_the_callers_order_whatever_the_batching():
    # Pairs are batched longest first; each score must still land on its own pair.
    reranker = CrossEncoderReranker(device=TEST_DEVICE, max_length=64)
    queries = [CONTEXTS[i % len(CONTEXTS)] for i in range(9)]
    documents = [POSITIVE[: 10 + 7 * i] if i % 2 else NEGATIVES[i % 3] for i in range(9)]
    alone = np.array([reranker.score([q], [d])[0] for q, d in zip(queries, documents)])
    assert np.allclose(reranker.score(queries, documents, batch_size=4), alone, atol=1e-4)
    assert np.allclose(reranker.score(queries, documents), alone, atol=1e-4)
    assert reranker.score([], []).shape == (0,)
