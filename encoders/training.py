"""Fine-tuning the reranker: listwise softmax over one positive and its negatives.

Each group is (context, positive candidate, negatives); the loss is the cross-entropy of the
positive's position under a softmax over the group's scores, which trains exactly what reranking
uses (the order inside a candidate list) rather than absolute relevance labels.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from encoders.cross_encoder import CrossEncoderReranker


def warmup_then_linear_decay(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate rises over the first tenth of ``steps``, then falls linearly to zero."""
    warmup = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup)))


def shuffled_batches(rows: list, batch_size: int, rng: random.Random):
    """One epoch: ``rows`` in an order drawn from ``rng``, in batches of ``batch_size``."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        yield [rows[i] for i in order[start:start + batch_size]]


@dataclass(frozen=True)
class RerankGroup:
    context: str
    positive: str
    negatives: tuple[str, ...]


@dataclass
class EpochReport:
    epoch: int
    loss: float
    seconds: float
    pairs: int


def train_listwise(
    reranker: CrossEncoderReranker,
    groups: list[RerankGroup],
    epochs: int = 1,
    groups_per_batch: int = 8,
    lr: float = 3e-5,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> list[EpochReport]:
    """Train in place; returns one report per epoch. ``on_batch(n_groups)`` drives a progress bar."""
    if not groups:
        raise ValueError("no training groups: the event log has too few users with two or more items")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = reranker.model
    if reranker.half:
        model.float()
        reranker.half = False
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((len(groups) + groups_per_batch - 1) // groups_per_batch)
    scheduler = warmup_then_linear_decay(optimizer, steps)
    use_amp = reranker.device.startswith("cuda")
    reports = []
    for epoch in range(1, epochs + 1):
        started, total_loss, pairs = time.perf_counter(), 0.0, 0
        for batch in shuffled_batches(groups, groups_per_batch, rng):
            queries, docs, sizes = [], [], []
            for g in batch:
                candidates = [g.positive, *g.negatives]
                queries += [g.context] * len(candidates)
                docs += candidates
                sizes.append(len(candidates))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                scores = reranker.logits(queries, docs).float()
            loss = torch.zeros((), device=scores.device)
            offset = 0
            for size in sizes:  # the positive is first in every group
                group_scores = scores[offset:offset + size]
                loss = loss + torch.nn.functional.cross_entropy(group_scores.view(1, -1),
                                                                torch.zeros(1, dtype=torch.long, device=scores.device))
                offset += size
            loss = loss / len(sizes)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(sizes)
            pairs += len(docs)
            if on_batch is not None:
                on_batch(len(batch))
        reports.append(EpochReport(epoch, total_loss / len(groups), time.perf_counter() - started, pairs))
    model.eval()
    return reports


def train_contrastive(
    encoder,
    pairs: list[tuple[str, str]],
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    scale: float = 20.0,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> list[EpochReport]:
    """Fine-tune a ``BiEncoder`` on (anchor text, positive text) pairs with in-batch negatives
    (the loss of sentence-transformers' MultipleNegativesRankingLoss: cross-entropy over scaled
    cosine similarities, every other positive in the batch is a negative). Pairs whose positive
    repeats inside a batch would be false negatives, so a batch keeps each positive once."""
    if not pairs:
        raise ValueError("no training pairs: the event log has too few users with two or more items")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = encoder.model
    if encoder.device.startswith("cuda"):
        model.float()  # BiEncoder serves in fp16 on CUDA; train in fp32 with bf16 autocast
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = max(1, epochs * (len(pairs) // batch_size))
    scheduler = warmup_then_linear_decay(optimizer, steps)
    use_amp = encoder.device.startswith("cuda")
    preprocess = getattr(model, "preprocess", None) or model.tokenize

    def embed(texts: list[str]) -> torch.Tensor:
        features = {k: v.to(encoder.device) if hasattr(v, "to") else v for k, v in preprocess(texts).items()}
        return torch.nn.functional.normalize(model(features)["sentence_embedding"].float(), dim=-1)

    reports = []
    for epoch in range(1, epochs + 1):
        started, total_loss, n_batches, n_pairs = time.perf_counter(), 0.0, 0, 0
        for drawn in shuffled_batches(pairs, batch_size, rng):
            batch, positives = [], set()
            for pair in drawn:
                if pair[1] not in positives:
                    positives.add(pair[1])
                    batch.append(pair)
            if len(batch) < 2:
                continue
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                anchors = embed([a for a, _ in batch])
                targets = embed([p for _, p in batch])
            logits = scale * anchors @ targets.T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch), device=logits.device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach())
            n_batches += 1
            n_pairs += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
        reports.append(EpochReport(epoch, total_loss / max(1, n_batches), time.perf_counter() - started, n_pairs))
    model.eval()
    if encoder.device.startswith("cuda"):
        model.half()
    return reports
