"""The adapter experiment that benchmarks/staleness.py runs (benchmarks/adapter.py)."""

import numpy as np
import pytest

from benchmarks.adapter import adapter_examples, add_adapter, train_adapter
from encoders import BiEncoder
from tests.conftest import TEST_DEVICE
from tests.encoders.test_contrastive import PAIRS

pytestmark = pytest.mark.slow


def test_adapter_examples_are_every_step_of_every_sequence():
    assert adapter_examples({"u": ["a", "b", "c", "b"]}, {"a": 0, "b": 1, "c": 2}) == [([0], 1), ([0, 1], 2)]


def test_an_adapter_learns_what_follows_what_and_saves_as_a_plain_model(tmp_path):
    import torch

    # Two groups of unrelated items: whoever takes an item of group a takes an item of group b next.
    rng = np.random.default_rng(0)
    items = rng.normal(size=(40, 16)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    examples = [([int(a)], int(a) + 20) for a in rng.integers(0, 20, size=400)]

    def mean_rank(mapping):
        mapped = items @ mapping
        mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
        ranks = []
        for a in range(20):
            scores = mapped @ mapped[a]
            scores[a] = -np.inf
            ranks.append(int((scores > scores[a + 20]).sum()))
        return float(np.mean(ranks))

    mapping, reports = train_adapter(items, examples, epochs=30, batch_size=64, lr=1e-2, seed=0)
    assert mapping.shape == (16, 16)
    assert reports[-1].loss < reports[0].loss
    assert mean_rank(np.eye(16, dtype=np.float32)) > 5 > mean_rank(mapping.numpy())
    again, _ = train_adapter(items, examples, epochs=30, batch_size=64, lr=1e-2, seed=0)
    assert torch.equal(again, mapping)  # seeded: the same map every time
    with pytest.raises(ValueError, match="no training examples"):
        train_adapter(items, [])

    # On a real encoder the map is a module of the model: encode() maps, save() writes it, and the
    # folder reloads (with any sentence-transformers install) to the same vectors.
    encoder = BiEncoder(device=TEST_DEVICE)
    texts = [a for a, _ in PAIRS]
    plain = encoder.encode(texts)
    square = torch.eye(encoder.dim) + 0.05 * torch.from_numpy(rng.normal(size=(encoder.dim, encoder.dim))).float()
    add_adapter(encoder, square)
    expected = plain @ square.numpy()
    assert np.allclose(encoder.encode(texts), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    encoder.save(tmp_path / "adapted")
    assert np.allclose(BiEncoder(str(tmp_path / "adapted"), device=TEST_DEVICE).encode(texts),
                       encoder.encode(texts), atol=1e-5)
