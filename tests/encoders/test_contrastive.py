"""Bi-encoder fine-tuning: a tiny run pulls anchors towards their positives; saved models reload."""

import numpy as np
import pytest

from encoders import BiEncoder
from encoders.training import train_contrastive
from tests.conftest import TEST_DEVICE

pytestmark = pytest.mark.slow

PAIRS = [
    ("Zorblax widget, blue", "Quantum flux capacitor refill"),
    ("Zorblax widget, red", "Quantum flux capacitor refill pack"),
    ("Vintage typewriter ribbon", "Correction tape for typewriters"),
    ("Typewriter, portable", "Typewriter ribbon, black"),
    ("Fountain pen, fine nib", "Bottled ink, blue-black"),
    ("Fountain pen, medium nib", "Ink converter for fountain pens"),
]


def similarity(encoder, a, b):
    va, vb = encoder.encode([a, b])
    return float(va @ vb)


def test_contrastive_training_moves_pairs_together_and_round_trips(tmp_path):
    encoder = BiEncoder(device=TEST_DEVICE)
    anchor, positive = "Zorblax widget, green", "Quantum flux capacitor refill"
    before = similarity(encoder, anchor, positive)
    reports = train_contrastive(encoder, PAIRS * 6, epochs=3, batch_size=6, lr=1e-4, seed=0)
    assert reports[-1].loss < reports[0].loss
    assert similarity(encoder, anchor, positive) > before + 0.05
    encoder.save(tmp_path / "enc")
    again = BiEncoder(str(tmp_path / "enc"), device=TEST_DEVICE)
    assert again.name == "enc"
    texts = ["Zorblax widget", "ink"]
    assert np.allclose(again.encode(texts), encoder.encode(texts), atol=1e-5)
    with pytest.raises(ValueError, match="no training pairs"):
        train_contrastive(encoder, [])


def test_a_centre_saved_with_the_model_is_taken_out_of_every_vector(tmp_path):
    encoder = BiEncoder(device=TEST_DEVICE)
    assert encoder.center is None
    texts = [a for a, _ in PAIRS] + [b for _, b in PAIRS]
    plain = encoder.encode(texts)
    encoder.center = plain.mean(axis=0)
    centred = encoder.encode(texts)
    assert np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    expected = plain - plain.mean(axis=0)
    assert np.allclose(centred, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert np.linalg.norm(centred.mean(axis=0)) < np.linalg.norm(plain.mean(axis=0))
    encoder.save(tmp_path / "enc")
    again = BiEncoder(str(tmp_path / "enc"), device=TEST_DEVICE)
    assert np.array_equal(again.center, encoder.center)
    assert np.allclose(again.encode(texts), centred, atol=1e-5)
