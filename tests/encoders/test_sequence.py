"""The sequence encoder's network: it learns an order that text alone cannot tell, reads padding as
nothing, and saves and loads exactly."""

import numpy as np
import torch

from encoders.sequence import SequenceEncoder, SequenceModel, SequenceShape


def chain_vectors(n: int = 30, dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return {f"i{k}": row / np.linalg.norm(row) for k, row in enumerate(v)}


def test_it_learns_which_item_comes_next_from_the_order_alone():
    """Items are random vectors and each one's successor is fixed: only the order tells it."""
    vectors = chain_vectors()
    ids = list(vectors)
    torch.manual_seed(0)
    model = SequenceModel(SequenceEncoder(SequenceShape(item_dim=16, hidden=32, max_length=5, dropout=0.0), len(ids)),
                          ids, device="cpu")
    matrix = torch.from_numpy(np.stack([vectors[i] for i in ids]))
    optimiser = torch.optim.Adam(model.network.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    windows = [[ids[(s + t) % len(ids)] for t in range(6)] for s in range(len(ids))]

    def next_rank_one() -> float:
        model.network.eval()
        out = model.encode([w[:-1] for w in windows], vectors)
        best = np.argmax(out @ matrix.numpy().T, axis=1)
        return float(np.mean([ids[b] == w[-1] for b, w in zip(best, windows)]))

    before = next_rank_one()
    model.network.train()
    for _ in range(300):
        x, residual, mask = model.window([w[:-1] for w in windows], vectors, 0.0, rng)
        out = model.network(x, residual, mask)
        targets = torch.tensor([[ids.index(i) for i in w[1:]] for w in windows])
        loss = torch.nn.functional.cross_entropy((out.reshape(-1, 16) @ matrix.T) / 0.05, targets.reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert before < 0.2 and next_rank_one() > 0.9


def test_padding_and_unknown_items_are_read_as_nothing_and_save_load_is_exact(tmp_path):
    vectors = chain_vectors()
    model = SequenceModel(SequenceEncoder(SequenceShape(item_dim=16, hidden=32, max_length=5), 3), ["i0", "i1", "i2"],
                          device="cpu")
    short = model.encode([["i3", "i4"]], vectors)
    # A deleted item (no vector) is skipped: the same as never having been there.
    assert np.allclose(model.encode([["gone", "i3", "i4"]], vectors), short, atol=1e-6)
    # In a batch with longer histories the short one's padding changes nothing.
    batch = model.encode([["i3", "i4"], ["i0", "i1", "i2", "i3", "i4", "i5"]], vectors)
    assert np.allclose(batch[0], short[0], atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert not model.encode([["gone"]], vectors).any() and model.encode([], vectors).shape == (0, 16)
    model.save(tmp_path / "m")
    loaded = SequenceModel.load(tmp_path / "m", device="cpu")
    assert loaded.residual_items == ["i0", "i1", "i2"]
    assert np.array_equal(loaded.encode([["i0", "i3"]], vectors), model.encode([["i0", "i3"]], vectors))
