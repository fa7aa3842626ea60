"""Train the sequence encoder on the event log, choose its fusion weight, and accept it only if the
served retrieval with it is clearly better than without it, and clearly worse on no slice.

What the model learns from: every user's sequence without its ``left_out`` newest items (the
validation target, and by default the steps a learned ranker trains on), windows of
``max_length + 1`` items read left to right, every step of a window a training case (the next
item among all items: a softmax over the catalogue's text vectors, so the output lives in the
item space and is searched there as served). Training stops when the sequence alone
stops improving on the early-stopping users' second-newest items, which it never reads either.

Judged as the other trainers judge (``training.protocol.judge_every_slice``): each judged user's
newest item, with the collaborative signal as the log stood before it, the fused retrieval with and
without the new source, per slice: all users (the history), cold items (a seeded share of items the
model never trained on), cold users (only the newest history item, an anonymous session) and
long-tail targets. Clearly better on all users, clearly worse on none.

Example::

    report = train_sequence(engine, engine.models.sequences, SequenceTrainingSettings(epochs=10))
    report["accepted"], report["fusion_weight"], report["validation"]["cold_items"]["gain"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.device import resolve_device
from encoders.sequence import SequenceEncoder, SequenceModel, SequenceShape
from retrieval.engine import Engine
from retrieval.evaluation import metrics
from retrieval.pipeline.context import build_context
from retrieval.pipeline.fusion import SourceResult
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.pipeline.sources import LoadedSequence
from retrieval.registry import SequenceVersions
from retrieval.storage.files import write_atomically
from retrieval.training.encoder import PROFILE_ITEMS, catalogue_vectors
from retrieval.training.protocol import (
    COLD_ITEM_SHARE,
    held_out_items,
    index_of,
    judge_every_slice,
    judged_users,
    log_sequences,
    slice_cases,
    withheld_if_forgotten,
    without_items,
)
from retrieval.training.settings import SequenceTrainingSettings

log = logging.getLogger("hybridrec.training")



def training_windows(sequences: dict[str, list[str]], length: int) -> list[list[str]]:
    """Each sequence cut into windows of at most ``length + 1`` items, from its newest end back, so
    every step is a training case exactly once.

    >>> training_windows({"u": ["a", "b", "c", "d", "e"]}, 2)
    [['c', 'd', 'e'], ['a', 'b', 'c']]
    """
    out = []
    for seq in sequences.values():
        end = len(seq)
        while end > 1:
            start = max(0, end - length - 1)
            out.append(seq[start:end])
            end = start + 1
    return out


@dataclass
class _Catalogue:
    """Every item's stored vector as a matrix the softmax runs over."""

    ids: list[str]
    position: dict[str, int]
    matrix: np.ndarray
    vectors: dict[str, np.ndarray]

    @classmethod
    def of(cls, engine: Engine) -> _Catalogue:
        vectors = {i: np.asarray(v, dtype=np.float32) for i, v in catalogue_vectors(engine).items() if v is not None}
        ids = sorted(vectors)
        return cls(ids, {i: n for n, i in enumerate(ids)}, np.stack([vectors[i] for i in ids]), vectors)


def sequence_ndcg(model: SequenceModel, items: _Catalogue, cases: list[tuple[list[str], str]],
                  batch: int = 256) -> list[float]:
    """NDCG@10 of the sequence encoder alone for each (history, target): every item but the history."""
    scores = []
    matrix = torch.from_numpy(items.matrix).to(model.device)
    for start in range(0, len(cases), batch):
        chunk = cases[start:start + batch]
        with torch.inference_mode():
            vectors, residual, mask = model.window([h for h, _ in chunk], items.vectors)
            sims = (model.network(vectors, residual, mask)[:, -1] @ matrix.T).float().cpu().numpy()
        for row, (history, target) in enumerate(chunk):
            seen = [items.position[i] for i in history if i in items.position]
            sims[row, seen] = -np.inf
            if target not in items.position:
                scores.append(0.0)
                continue
            rank = int((sims[row] > sims[row, items.position[target]]).sum()) + 1
            scores.append(metrics.ndcg_at(rank, 10))
    return scores


def _fingerprint(settings: SequenceTrainingSettings, space: dict[str, Any], item_ids: list[str],
                 windows: list[list[str]], early: list[tuple[list[str], str]], residual_items: list[str]) -> str:
    """What a checkpoint was trained on: a run resumes from it only on exactly the same (a forgotten
    user, a deleted item or a new event since changes the windows, the items or their rows)."""
    return hashlib.sha256(json.dumps([asdict(settings), space, item_ids, windows, early, residual_items],
                                     sort_keys=True).encode()).hexdigest()[:16]


def _resumable(checkpoint: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint's state where it was trained on exactly this (``_fingerprint``); else None,
    and an unreadable one is deleted (the run starts over rather than failing on every retry)."""
    if not checkpoint.exists():
        return None
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a damaged checkpoint only costs the epochs it held
        log.warning("sequence training checkpoint %s is unreadable (%s); training starts over", checkpoint, err)
        checkpoint.unlink(missing_ok=True)
        return None
    if saved.get("fingerprint") != fingerprint:
        log.info("the log or the items changed since the checkpoint %s was saved; training starts over", checkpoint)
        checkpoint.unlink(missing_ok=True)  # it may hold what a user since forgotten taught it
        return None
    return saved


def _fit(model: SequenceModel, items: _Catalogue, windows: list[list[str]], early: list[tuple[list[str], str]],
         settings: SequenceTrainingSettings, checkpoint: Path, fingerprint: str,
         progress_factory: Callable[[str, int], Any] | None) -> list[dict[str, float]]:
    """Train ``model`` in place; keeps the epoch best on ``early``; resumes from ``checkpoint``."""
    network = model.network
    torch.manual_seed(settings.seed)
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    epochs: list[dict[str, float]] = []
    best = (-1.0, None)
    saved = _resumable(checkpoint, fingerprint)
    if saved is not None:
        network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        epochs, best = saved["epochs"], (saved["best_score"], saved["best_state"])
        # Both random streams go on where they stopped: a resumed run trains the model an
        # uninterrupted one would (dropout draws from torch's, window order from numpy's).
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
    full = len(items.ids) <= settings.max_softmax_items
    matrix = torch.from_numpy(items.matrix).to(model.device)
    counts = np.ones(len(items.ids))  # add-one: an item never taken next still has a share
    for w in windows:
        for i in w[1:]:
            if i in items.position:
                counts[items.position[i]] += 1
    log_share = torch.from_numpy(np.log(counts / counts.sum())).float().to(model.device)
    length = settings.max_length
    bar = progress_factory("train sequence encoder", settings.epochs * len(windows)) if progress_factory else None
    if bar is not None:
        bar.update(len(epochs) * len(windows))
    waited = len(epochs) - 1 - max(range(len(epochs)), key=lambda n: epochs[n]["early_stop_ndcg@10"]) if epochs else 0
    for epoch in range(len(epochs), settings.epochs):
        if waited >= settings.patience:
            break
        started = time.perf_counter()
        network.train()
        order = rng.permutation(len(windows))
        total, steps = 0.0, 0
        for start in range(0, len(order), settings.batch_size):
            chunk = [windows[n] for n in order[start:start + settings.batch_size]]
            vectors, residual, mask = model.window([w[:-1] for w in chunk], items.vectors,
                                                   settings.drop_residual, rng)
            targets = np.full((len(chunk), length), -100, dtype=np.int64)
            for row, w in enumerate(chunk):
                nxt = [items.position.get(i, -100) for i in w[1:]][-length:]
                targets[row, length - len(nxt):] = nxt
            out = network(vectors, residual, mask)
            keep = torch.from_numpy(targets).to(model.device).view(-1)
            flat = out.reshape(-1, out.shape[-1])[keep >= 0]
            keep = keep[keep >= 0]
            if full:
                logits = flat @ matrix.T / settings.temperature + settings.popularity_correction * log_share
            else:  # the batch's targets plus a seeded sample of the catalogue
                sample = torch.from_numpy(rng.choice(len(items.ids), settings.max_softmax_items, replace=False))
                pool, keep = torch.unique(torch.cat([keep.cpu(), sample]), return_inverse=True)
                keep = keep[: len(flat)].to(model.device)
                pool = pool.to(model.device)
                logits = (flat @ matrix[pool].T / settings.temperature
                          + settings.popularity_correction * log_share[pool])
            loss = torch.nn.functional.cross_entropy(logits, keep)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimiser.step()
            total, steps = total + loss.item(), steps + 1
            if bar is not None:
                bar.update(len(chunk))
        network.eval()
        score = float(np.mean(sequence_ndcg(model, items, early) or [0.0]))
        epochs.append({"epoch": epoch + 1, "loss": total / max(steps, 1), "early_stop_ndcg@10": score,
                       "seconds": time.perf_counter() - started})
        if score > best[0]:
            best = (score, {k: v.detach().cpu().clone() for k, v in network.state_dict().items()})
            waited = 0
        else:
            waited += 1
        state = {"fingerprint": fingerprint, "network": network.state_dict(), "optimiser": optimiser.state_dict(),
                 "epochs": epochs, "best_score": best[0], "best_state": best[1],
                 "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        write_atomically(checkpoint, lambda fh: torch.save(state, fh), durable=False)  # a kill keeps the last whole
    if bar is not None:
        bar.close()
    if best[1] is not None:
        network.load_state_dict(best[1])
    network.eval()
    return epochs


def _fused_ndcg(recommender: Recommender, cases: list[tuple[list[str], str]], loaded: LoadedSequence,
                weights: tuple[float, ...]) -> tuple[list[float], dict[float, list[float]]]:
    """NDCG@10 of the fused retrieval (no diversity, no ranker) for each (history, target) as an
    anonymous session, without the sequence source and with it at each weight. The sources answer
    once per case; only the fusion is repeated."""
    source = recommender.sources["sequence"]
    before, source.loaded = source.loaded, loaded
    without: list[float] = []
    with_weight: dict[float, list[float]] = {w: [] for w in weights}
    try:
        for history, target in cases:
            req = RecommendRequest(history=history[-PROFILE_ITEMS:], k=10, rerank=False, diversity=0.0)
            options = ReplayOptions()
            ctx, _ = build_context(req, options, recommender.profiles, recommender.catalogue, recommender.config)
            results = recommender.gather(ctx, options, [])
            others = [r for r in results if r.name != "sequence"]
            sequence = [r for r in results if r.name == "sequence"]

            def ndcg(fused_from: list[SourceResult]) -> float:
                ids = [c.id for c in recommender.fuse(fused_from, ranker_pool=False)[:10]]
                return metrics.ndcg_at(metrics.target_rank(ids, target), 10)

            without.append(ndcg(others))
            for w in weights:
                with_weight[w].append(ndcg(others + [SourceResult(s.name, s.ranked, w) for s in sequence]))
    finally:
        source.loaded = before
    return without, with_weight


def train_sequence(engine: Engine, versions: SequenceVersions, settings: SequenceTrainingSettings | None = None,
                   progress_factory: Callable[[str, int], Any] | None = None) -> dict[str, Any]:
    """Train, judge and save a sequence encoder version; returns its metadata (``accepted``,
    ``reason``, ``fusion_weight``, ``validation`` per slice, ``version``)."""
    settings = settings or SequenceTrainingSettings()
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    log_seq = engine.log.max_seq()
    read_users = engine.index.user_ids()
    sequences = log_sequences(engine.log, engine.index)
    if len(sequences) < 2:
        raise ValueError(f"too little data: {len(sequences)} users with two or more items; log more events")
    items = _Catalogue.of(engine)
    space = engine.item_space()
    # Early stopping reads second-newest items; validation judges newest ones. Neither is trained on.
    early_users = set(judged_users(sequences, settings.early_stop_users, settings.max_early_stop_users, rng)
                      if len(sequences) >= 10 else [])
    early = [(sequences[u][:-2], sequences[u][-2]) for u in sorted(early_users) if len(sequences[u]) >= 3]
    # A seeded share of items is new to the model, so the cold-items slice judges it on items it has
    # never seen (as the encoder trainer does).
    held = held_out_items(sequences, COLD_ITEM_SHARE, settings.seed)
    trained = without_items({u: seq[:len(seq) - max(settings.left_out, 2 if u in early_users else 1)]
                             for u, seq in sequences.items()}, held)
    trained = {u: seq for u, seq in trained.items() if len(seq) > 1}
    if not trained:
        raise ValueError(f"no training examples: a user needs {max(settings.left_out, 1) + 2} or more items "
                         "(train_sequence.left_out newest ones are not trained on); log more events")
    windows = training_windows(trained, settings.max_length)
    residual_items = sorted({i for seq in trained.values() for i in seq if i in items.position})
    shape = SequenceShape(item_dim=items.matrix.shape[1], hidden=settings.hidden, layers=settings.layers,
                          heads=settings.heads, max_length=settings.max_length, dropout=settings.dropout)
    torch.manual_seed(settings.seed)  # the initial weights too: the same log trains the same model
    model = SequenceModel(SequenceEncoder(shape, len(residual_items)), residual_items,
                          device=resolve_device(settings.device))
    versions.root.mkdir(parents=True, exist_ok=True)
    checkpoint = versions.checkpoint
    fit_started = time.perf_counter()
    stopping = early or [(s[:-1], s[-1]) for s in list(trained.values())[:200]]
    epochs = _fit(model, items, windows, stopping, settings, checkpoint,
                  _fingerprint(settings, space, items.ids, windows, stopping, residual_items), progress_factory)
    fit_seconds = time.perf_counter() - fit_started

    judged = judged_users(sequences, settings.validation_users, settings.max_validation_users, rng)
    before_newest = {u: seq[:-1] for u, seq in sequences.items()}
    # Each slice as the offline evaluation defines it (``slice_cases``), with the collaborative
    # signal as the log stood before the targets; for cold items, as if the held-out items had
    # never been taken. Preference-only requests carry no history, so the source never answers them.
    head = {i for i, _ in index_of(before_newest).popular(round(engine.catalogue.count() * settings.long_tail_head))}
    cases = slice_cases(sequences, judged, head, {}, cold=held)
    warm = engine.wire(engine.layout, engine.encoder, index_of(before_newest))[2]
    cold = engine.wire(engine.layout, engine.encoder, index_of(without_items(before_newest, held)))[2]
    loaded = LoadedSequence("candidate", model, 1.0)
    runs = {name: _fused_ndcg(cold if name == "cold_items" else warm, [(list(c.history), c.target) for c in group],
                              loaded, settings.fusion_weights)
            for name, group in cases.items() if name not in ("long_tail", "cold_users_prefs")}
    tail = {id(c) for c in cases["long_tail"]}
    at = [n for n, c in enumerate(cases["all"]) if id(c) in tail]
    runs["long_tail"] = ([runs["all"][0][n] for n in at], {w: [s[n] for n in at] for w, s in runs["all"][1].items()})
    weight = max(settings.fusion_weights, key=lambda w: (float(np.mean(runs["all"][1][w] or [0.0])), -w))
    verdict = judge_every_slice({name: with_weight[weight] for name, (_, with_weight) in runs.items()},
                                {name: without for name, (without, _) in runs.items()})
    validation = {name: {**verdict.slices[name],
                         "by_weight": {str(w): float(np.mean(s or [0.0])) for w, s in runs[name][1].items()}}
                  for name in verdict.slices}
    alone = float(np.mean(sequence_ndcg(model, items, [(list(c.history), c.target) for c in cases["all"]]) or [0.0]))
    accepted, reason, forgotten = withheld_if_forgotten(
        engine.log, read_users, log_seq, verdict.accepted,
        f"with the sequence source at fusion weight {weight:g}, against the retrieval without it: {verdict.reason}; "
        f"the sequence source alone {alone:.4f} on all users; on {len(judged)} users' newest items")
    metadata = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "accepted": accepted, "reason": reason, "log_seq": log_seq, "forgotten_while_training": forgotten,
        "item_space": space,
        "fusion_weight": weight, "validation": validation, "sequence_alone_ndcg@10": alone,
        "held_out_items": len(held), "epochs": epochs, "windows": len(windows), "train_users": len(trained), "residual_items": len(residual_items),
        "early_stop_users": len(early), "device": model.device, "train_seconds": fit_seconds,
        "settings": asdict(settings), "seconds": time.perf_counter() - started,
    }
    version = versions.save(model.save, metadata)
    checkpoint.unlink(missing_ok=True)
    metadata.update(version=version, path=str(versions.path(version)))
    return metadata
