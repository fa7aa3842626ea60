"""A linear adapter over frozen encoder vectors, trained on (history profile -> next item): an
experiment, not a product path. It wins validation and loses cold items on test, so the encoder
trainer fine-tunes the whole transformer instead (docs/research.md, "Not defaults: the adapter and
--refit"); ``benchmarks/staleness.py`` uses it to measure how fast what a model learns from the log
goes stale."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch

from encoders import BiEncoder
from encoders.profile import position_weights
from encoders.training import EpochReport, shuffled_batches
from retrieval.training.encoder import PROFILE_ITEMS


def adapter_examples(sequences: dict[str, list[str]], rows: dict[str, int]) -> list[tuple[list[int], int]]:
    """The adapter's examples: (the newest ``PROFILE_ITEMS`` history item rows, next item row) for
    every step of every sequence; items without a row (not in the catalogue) are skipped, and so is
    a next item already in the history.

    >>> adapter_examples({"u": ["a", "b", "c"]}, {"a": 0, "b": 1, "c": 2})
    [([0], 1), ([0, 1], 2)]
    """
    examples = []
    for sequence in sequences.values():
        seq = [rows[i] for i in sequence if i in rows]
        for t in range(1, len(seq)):
            history = seq[max(0, t - PROFILE_ITEMS):t]
            if seq[t] not in history:
                examples.append((history, seq[t]))
    return examples


def train_adapter(
    vectors: torch.Tensor | list,
    examples: list[tuple[list[int], int]],
    position_decay: float = 0.5,
    epochs: int = 14,
    batch_size: int = 512,
    lr: float = 1e-3,
    scale: float = 20.0,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, list[EpochReport]]:
    """Learn a linear map ``W`` (``(dim, dim)``, starting at the identity) over frozen item vectors
    so that a history's profile, mapped, finds the item taken next.

    ``vectors``: ``(n_items, dim)`` unit item vectors as the encoder writes them; ``examples``:
    ``(history item rows, oldest first, next item row)``. A profile is what the service serves: the
    unit-length decayed sum of the history's mapped item vectors, the newest weighing most
    (``position_decay`` per newer item). The loss is a softmax over the batch's next items, the
    history's own items left out (in-batch negatives, so items nobody has taken are never pushed
    away: a softmax over the whole catalogue taught the map that an item without interactions is
    never wanted, which costs cold items; docs/research.md, "Not in the product: the adapter and the refit").

    Example::

        W, reports = train_adapter(item_matrix, [([3, 7], 9), ([9], 4)])
        mapped = torch.nn.functional.normalize(item_matrix @ W, dim=-1)
    """
    if not examples:
        raise ValueError("no training examples: the event log has too few users with two or more items")
    rng = random.Random(seed)
    items = torch.as_tensor(vectors, dtype=torch.float32)
    n, dim = items.shape
    delta = torch.zeros(dim, dim, requires_grad=True)  # W = I + delta: training starts from the encoder as is
    optimizer = torch.optim.Adam([delta], lr=lr)
    pad = n  # a zero row: histories of different lengths in one batch
    reports = []
    for epoch in range(1, epochs + 1):
        started, total_loss, n_batches = time.perf_counter(), 0.0, 0
        for batch in shuffled_batches(examples, batch_size, rng):
            longest = max(len(h) for h, _ in batch)
            rows = torch.full((len(batch), longest), pad, dtype=torch.long)
            weights = torch.zeros(len(batch), longest)
            for r, (history, _) in enumerate(batch):
                rows[r, :len(history)] = torch.tensor(history)
                weights[r, :len(history)] = torch.tensor(position_weights(len(history), position_decay))
            targets = torch.tensor([t for _, t in batch])
            mapped = torch.nn.functional.normalize(items + items @ delta, dim=-1)
            padded = torch.cat([mapped, torch.zeros(1, dim)])
            profiles = torch.nn.functional.normalize((padded[rows] * weights[..., None]).sum(1), dim=-1)
            candidates, column = torch.unique(targets, return_inverse=True)
            logits = scale * profiles @ mapped[candidates].T
            # A candidate already in the history is not a next item (the service filters it too).
            seen = (rows[:, :, None] == candidates[None, None, :]).any(1)
            seen[torch.arange(len(batch)), column] = False
            loss = torch.nn.functional.cross_entropy(logits.masked_fill(seen, float("-inf")), column)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach())
            n_batches += 1
            if on_batch is not None:
                on_batch(len(batch))
        reports.append(EpochReport(epoch, total_loss / max(1, n_batches), time.perf_counter() - started,
                                   len(examples)))
    return (torch.eye(dim) + delta.detach()), reports


def add_adapter(encoder: BiEncoder, matrix) -> None:
    """Map every vector this encoder writes through ``matrix`` (``(dim, dim)``: ``v @ matrix``,
    then unit length), as a sentence-transformers ``Dense`` + ``Normalize`` pair appended to the
    model, so that ``save`` writes a folder any sentence-transformers install loads as is.

    Example::

        add_adapter(encoder, W)   # W from train_adapter
        encoder.encode(["red stapler"])   # == unit(old encoding @ W)
    """
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    weight = torch.as_tensor(matrix, dtype=torch.float32).T.contiguous()  # Dense computes x @ weight.T
    dense = Dense(encoder.dim, weight.shape[0], bias=False, activation_function=torch.nn.Identity(),
                  init_weight=weight)
    dtype = next(encoder.model.parameters()).dtype
    encoder.model.append(dense.to(encoder.device, dtype=dtype))
    encoder.model.append(Normalize())
    encoder.dim = int(weight.shape[0])
