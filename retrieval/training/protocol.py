"""The protocol both trainers follow: the user sequences of the log, whose newest item validation
judges, the training cases, retrieval at a past moment, and the rule that accepts a model only if
it is clearly better."""

from __future__ import annotations

import random
from collections.abc import Sequence

from retrieval.evaluation.metrics import paired_difference
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendedItem, RecommendRequest, ReplayOptions
from retrieval.ranking.rerank import HISTORY_ITEMS
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.event_log import EventLog


def log_sequences(log: EventLog, index: CoOccurrenceIndex) -> dict[str, list[str]]:
    """Each user's distinct items in order, for users with at least two."""
    return {u: index.history(u) for u in log.user_ids() if len(index.history(u)) >= 2}


def judged_users(sequences: dict[str, list[str]], share: float, most: int, rng: random.Random) -> list[str]:
    """The users whose newest item validation judges: a seeded share, at most ``most``, sorted.

    >>> judged_users({"a": [], "b": [], "c": [], "d": []}, 0.5, 10, random.Random(0))
    ['b', 'd']
    """
    users = sorted(sequences)
    return sorted(rng.sample(users, min(most, max(1, round(len(users) * share)))))


def next_item_cases(sequences: dict[str, list[str]], users: list[str],
                    positions: int, left_out: int = 1) -> list[tuple[str, list[str], str]]:
    """(user, history, next item) for the last ``positions`` steps of each user's sequence, never using
    its ``left_out`` newest items (the newest is what validation holds out)."""
    cases = []
    for user in users:
        seq = sequences[user][:len(sequences[user]) - left_out]
        for t in range(max(1, len(seq) - positions), len(seq)):
            cases.append((user, seq[:t], seq[t]))
    return cases


def retrieve_past_moment(recommender: Recommender, user: str, history: list[str], k: int,
                         ranker_pool: bool = False) -> list[RecommendedItem]:
    """The serving retrieval for a past moment of ``user``: their own logged events are left out
    of the collaborative signal, or the positive (logged) would vote for itself: that leak makes a
    model win validation and lose on test (docs/research.md, "Leaks").
    Pure relevance (no diversity, no reranker): what both trainers learn from and validate on;
    ``ranker_pool``: fused as the pool a ranker reorders rather than as the order served as is."""
    req = RecommendRequest(history=history[-HISTORY_ITEMS:], k=k, rerank=False, diversity=0.0)
    return recommender.recommend(req, ReplayOptions(leave_out_user=user, ranker_pool=ranker_pool)).items


def clearly_better(new: Sequence[float], old: Sequence[float], margin: float = 1.0) -> tuple[bool, float, float]:
    """Whether a per-case metric ``new`` beats ``old`` (same cases, paired) by more than ``margin``
    standard errors of the mean difference: (better, mean difference, standard error).

    A model that is "better" by less than its own noise is not worth a switch (an encoder needs a
    full reindex), and such models have lost on test (docs/research.md, "Judging every user's
    newest item").

    >>> clearly_better([1, 1, 0, 1], [0, 1, 0, 0])[0], clearly_better([1, 0], [0, 1])[0]
    (True, False)
    """
    mean, se = paired_difference(new, old)
    return mean > 0 and mean > margin * se, mean, se
