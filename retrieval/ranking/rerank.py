"""The rerank stage of the pipeline: a learned ranker reorders the top of the fused list.

The ranker (``ranking.model``) reads each candidate's retrieval evidence (``ranking.features``) and,
when the accepted model includes one, a fine-tuned cross-encoder's score for the (user context,
candidate text) pair, and when it includes one, a sequence encoder's similarity between the
history and each candidate. Which of these the served model uses was decided on validation by the
trainer, never assumed. Training, validation and serving all go through ``rank_inputs`` and
``rerank`` here, so features are computed one way only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.cross_encoder import CrossEncoderReranker
from encoders.sequence import SequenceModel
from encoders.text import candidate_text, context_text
from retrieval.pipeline.fusion import FusedCandidate
from retrieval.pipeline.sources import sequence_vector
from retrieval.ranking.features import CROSS_ENCODER_COLUMN, NO_OPINION_COLUMN, RECENT_ITEMS, candidate_features
from retrieval.ranking.model import RankingModel
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.vector_store import StoredPoint

CONTEXT_ITEMS = 5  # newest history items the cross-encoder reads
# The history the ranker's features see (its length is a feature): the trainers replay past
# moments with at most this many items, so serving reads no more than that either.
HISTORY_ITEMS = 20


@dataclass
class LoadedReranker:
    """An accepted model, ready to serve (see ``registry.RerankerVersions.load``)."""

    version: str
    ranker: RankingModel
    cross_encoder: CrossEncoderReranker | None
    metadata: dict[str, Any]
    # The sequence encoder the ranker was trained with, saved inside its version: the ranker reads
    # its similarity whether or not a sequence source serves.
    sequence: SequenceModel | None = None

    @property
    def description(self) -> str:
        return ("learned ranker" + (" + sequence encoder" if self.sequence is not None else "")
                + (" + cross-encoder" if self.cross_encoder is not None else ""))


@dataclass
class RankInputs:
    """What reranking one request needs, gathered once: features (cross-encoder column empty) and
    the texts a cross-encoder would read (context, and one document per candidate)."""

    ids: list[str]
    features: np.ndarray
    context: str
    documents: list[str]


def rank_inputs(catalogue: Catalogue, index: CoOccurrenceIndex, history: Sequence[str],
                candidates: Sequence[FusedCandidate], points: dict[str, StoredPoint] | None = None,
                leave_out_user: str | None = None, query: str | None = None,
                preferences: str | None = None, texts: bool = True,
                sequence: SequenceModel | None = None) -> RankInputs:
    """Features for ``candidates`` (fused order) given the ``history`` (oldest first).

    ``points`` may pass candidates already fetched with their vectors; ``leave_out_user`` is for
    training on the log (the user's own events must not count towards popularity); ``texts=False``
    leaves the documents out (a trainer holding thousands of lists without a cross-encoder);
    ``sequence`` fills the sequence encoder's column.
    """
    reads = sequence_vector(catalogue, sequence, history)  # its own max_length, not HISTORY_ITEMS
    history = list(history)[-HISTORY_ITEMS:]
    points = dict(points or {})
    newest = list(reversed(history[-max(RECENT_ITEMS, CONTEXT_ITEMS):]))
    missing = [i for i in {*(c.id for c in candidates), *newest}
               if i not in points or points[i].vector is None]
    if missing:
        points.update(catalogue.get_many(missing, with_vectors=True))
    candidates = [c for c in candidates if c.id in points]
    recent = [points[i] for i in newest if i in points]
    popularity = index.user_counts([c.id for c in candidates], leave_out=leave_out_user)
    features = candidate_features(candidates, points, recent[:RECENT_ITEMS], popularity, len(history), reads)
    context = context_text([p.payload for p in recent[:CONTEXT_ITEMS]], query, preferences)
    documents = [candidate_text(points[c.id].payload) for c in candidates] if texts else []
    return RankInputs([c.id for c in candidates], features, context, documents)


def with_cross_encoder(inputs: RankInputs, cross_encoder: CrossEncoderReranker | None) -> np.ndarray:
    """The features with the cross-encoder's column filled (left NaN without a cross-encoder)."""
    return with_cross_encoder_many([inputs], cross_encoder)[0]


def with_cross_encoder_many(lists: Sequence[RankInputs], cross_encoder: CrossEncoderReranker | None) -> list[np.ndarray]:
    """``with_cross_encoder`` for many lists, their pairs scored in one call, in batches of hundreds on
    a GPU rather than one list's fifty at a time (the gain there is not measured yet; on 2 CPU
    cores it is none).

    Example::

        features = with_cross_encoder_many([rank_inputs(...), rank_inputs(...)], cross_encoder)
    """
    if cross_encoder is None:
        return [inputs.features for inputs in lists]
    queries = [inputs.context for inputs in lists for _ in inputs.ids]
    documents = [document for inputs in lists for document in inputs.documents]
    scores = cross_encoder.score(queries, documents) if queries else np.zeros(0, dtype=np.float32)
    out, start = [], 0
    for inputs in lists:
        features = inputs.features
        if inputs.ids:
            features = features.copy()
            features[:, CROSS_ENCODER_COLUMN] = scores[start:start + len(inputs.ids)]
            start += len(inputs.ids)
        out.append(features)
    return out


@dataclass(frozen=True)
class Ranked:
    id: str
    place: int  # 1-based, in the reranked list
    score: float
    kept: bool  # the ranker had no opinion: the item kept the place retrieval gave it


def order_by(ids: Sequence[str], scores: np.ndarray, kept: np.ndarray | None = None) -> list[Ranked]:
    """The reranked list, best first; ties keep the retrieval order.

    Items flagged in ``kept`` keep their retrieval place and the others are reordered around them.
    Their score is the one just above them, so the list's scores never rise going down (diversity
    reads them as relevance).
    """
    n = len(ids)
    kept = np.zeros(n, dtype=bool) if kept is None else np.asarray(kept, dtype=bool)
    movable = iter(sorted((i for i in range(n) if not kept[i]), key=lambda i: (-scores[i], i)))
    out: list[Ranked] = []
    for place in range(n):
        if kept[place]:
            above = out[-1].score if out else max((float(scores[i]) for i in range(n) if not kept[i]), default=0.0)
            out.append(Ranked(ids[place], place + 1, above, True))
        else:
            i = next(movable)
            out.append(Ranked(ids[i], place + 1, float(scores[i]), False))
    return out


def rank_order(ranker: RankingModel, ids: Sequence[str], features: np.ndarray) -> list[Ranked]:
    """The ranker's order. It learned from the log, where every item taken had been taken by someone
    before, so it reads "nobody has taken this yet" as "nobody will" and sinks cold items
    (docs/research.md, "The ranker and cold items"; the cold-items slice of ``make eval-stages``).
    Items the collaborative signal has no opinion about are therefore left where retrieval (which
    handles them: no-opinion fusion) put them."""
    return order_by(ids, ranker.score(features), features[:, NO_OPINION_COLUMN] > 0)


@dataclass
class Reranking:
    """One request's candidates reordered, with the features exactly as the model scored them."""

    order: list[Ranked]
    features: np.ndarray  # rows in ``RankInputs.ids`` order; the cross-encoder's column filled where one serves


def rerank(reranker: LoadedReranker, inputs: RankInputs) -> Reranking:
    """Reorder one request's candidates with the served model."""
    features = with_cross_encoder(inputs, reranker.cross_encoder)
    return Reranking(rank_order(reranker.ranker, inputs.ids, features), features)
