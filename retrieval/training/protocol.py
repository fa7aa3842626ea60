"""The protocol every trainer follows: the user sequences of the log, whose newest item validation
judges, the training cases, retrieval at a past moment, and the rule that accepts a model only if
it is clearly better on all users and clearly worse on no slice (``judge_every_slice`` over the
cases of ``slice_cases``)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.evaluation.metrics import paired_difference
from retrieval.evaluation.replay import preference_text
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import RecommendedItem, RecommendRequest, ReplayOptions
from retrieval.ranking.rerank import HISTORY_ITEMS
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.storage.event_log import EventLog, StatedPreferences, keyed_users


def log_sequences(log: EventLog, index: CoOccurrenceIndex) -> dict[str, list[str]]:
    """Each user's distinct items in order, for users with at least two."""
    return {u: index.history(u) for u in log.user_ids() if len(index.history(u)) >= 2}


def forgotten_since_read(log: EventLog, users: Iterable[str], read_through: int) -> int:
    """How many of ``users``, whose events up to ``read_through`` a trainer read, were forgotten
    since: none of those events is left. A model that learned from them must never serve (their
    forget answered before it was saved, so it could not name it among the models to retrain).

    A user forgotten and back since has only newer events, so counts too; one who never left does not.
    """
    keys = log.forgotten_keys()
    if not keys:
        return 0
    gone = 0
    for user in keyed_users(log, users, keys):
        first = log.first_seq(user)
        gone += first is None or first > read_through
    return gone


def withheld_if_forgotten(log: EventLog, users: Iterable[str], read_through: int, accepted: bool,
                          reason: str) -> tuple[bool, str, int]:
    """A trained model's verdict once the users it read (``users``, up to ``read_through``) are
    checked: rejected, whatever it scored, where any was forgotten since (``forgotten_since_read``);
    also how many were."""
    forgotten = forgotten_since_read(log, users, read_through)
    if not forgotten:
        return accepted, reason, 0
    return False, (f"{forgotten} user(s) it learned from were forgotten while it trained: it never serves; "
                   f"train it again (judged: {reason})"), forgotten


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


# What a past moment is to the pipeline: a history without a user (``context.request_type``).
PAST_MOMENT = "session"


def retrieve_past_moment(recommender: Recommender, user: str, history: list[str], k: int,
                         ranker_pool: bool = False) -> list[RecommendedItem]:
    """The serving retrieval for a past moment of ``user``: their own logged events are left out
    of the collaborative signal, or the positive (logged) would vote for itself: that leak makes a
    model win validation and lose on test (docs/research.md, "Leaks").
    Pure relevance (no diversity, no reranker): what both trainers learn from and validate on;
    ``ranker_pool``: fused as the pool a ranker reorders rather than as the order served as is."""
    req = RecommendRequest(history=history[-HISTORY_ITEMS:], k=k, rerank=False, diversity=0.0)
    return recommender.recommend(req, ReplayOptions(leave_out_user=user, ranker_pool=ranker_pool)).items


# A model must gain at least this share of what serves to be switched to: a near-identity change
# (a ranker blended at 0.95 with retrieval's order gained +0.0003 ± 0.0002, 0.6%) can pass one
# standard error on thousands of cases, and is not worth a reload, let alone an encoder's reindex.
MIN_RELATIVE_GAIN = 0.01


def clearly_better(new: Sequence[float], old: Sequence[float], margin: float = 1.0,
                   min_relative: float = 0.0) -> tuple[bool, float, float]:
    """Whether a per-case metric ``new`` beats ``old`` (same cases, paired) by more than ``margin``
    standard errors of the mean difference and by at least ``min_relative`` of ``old``'s mean:
    (better, mean difference, standard error). The accept rules pass ``MIN_RELATIVE_GAIN``.

    A model that is "better" by less than its own noise is not worth a switch (an encoder needs a
    full reindex), and such models have lost on test (docs/research.md, "Judging every user's
    newest item").

    >>> clearly_better([1, 1, 0, 1], [0, 1, 0, 0])[0], clearly_better([1, 0], [0, 1])[0]
    (True, False)
    """
    mean, se = paired_difference(new, old)
    floor = min_relative * float(np.mean(old)) if len(old) else 0.0
    return mean > 0 and mean > margin * se and mean >= floor, mean, se


# --- Every slice: what the evaluation reports, judged before a model is accepted ------------------
#
# A model accepted for a gain on all users may still cost a slice: on another catalogue a
# fine-tuned encoder won +4.9% NDCG@10 on all users and cost cold items 9% and preference-only
# users 13% (issue 23). The trainers therefore judge the slices of the offline evaluation
# (``retrieval.evaluation.replay``) on their own validation cases, and refuse a model that is
# clearly worse on any of them.

SLICES = ("all", "cold_items", "cold_users", "cold_users_prefs", "long_tail")
# The share of items validation treats as new (cold_items): their interactions are hidden from the
# scoring (co-occurrence, popularity, the request's history) while they stay validation targets. A
# model whose training would see their interactions must leave them out too (the encoder does), or
# the slice measures a model that learned them (docs/research.md, "Leaks"). As the evaluation's
# ``EvalConfig.cold_item_fraction``.
COLD_ITEM_SHARE = 0.1
# The long tail: targets outside this share of the catalogue's most taken items (as
# ``EvalConfig.long_tail_head``; the encoder reads its own setting, ``long_tail_head``).
LONG_TAIL_HEAD = 0.2
# The request id of a preference-only case: a user nobody has seen who stated preferences
# (``with_stated_preferences``); nothing is written anywhere.
STATED_PREFIX = "validate::prefs::"


@dataclass(frozen=True)
class SliceCase:
    """One validation case of a slice: what the request carries and the item taken next.
    ``history`` is empty for a preference-only case, whose request is ``preferences`` alone."""

    user: str
    history: tuple[str, ...]
    target: str
    preferences: str | None = None


@dataclass
class SliceVerdict:
    """``accepted``: clearly better on all users and clearly worse on no other slice.
    ``slices``: {slice: {cases, old, new, gain, se, worse}} (``better`` too for "all")."""

    accepted: bool
    reason: str
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)


# A slice is "clearly worse" when it loses more than this many standard errors. Judged at one, a
# model with no effect on four slices is refused about half the time (0.16 per slice); at two, about
# one time in eleven (docs/research.md, "Judging every slice").
SLICE_WORSE_MARGIN = 2.0


def judge_every_slice(new: dict[str, Sequence[float]], old: dict[str, Sequence[float]],
                      margin: float = 1.0, worse_margin: float = SLICE_WORSE_MARGIN) -> SliceVerdict:
    """The accept rule on every slice: ``new`` and ``old`` hold each slice's per-case metric (the
    same cases, in the same order, for both). "all" must be clearly better (``clearly_better`` by
    ``margin`` standard errors and ``MIN_RELATIVE_GAIN``); every other slice with cases must not be
    clearly worse (``old`` better than ``new`` by ``worse_margin`` standard errors). Slices without
    cases are recorded and not judged.

    >>> v = judge_every_slice({"all": [1, 1, 0, 1], "cold_items": [0, 0, 0]},
    ...                       {"all": [0, 1, 0, 0], "cold_items": [1, 1, 1]})
    >>> v.accepted, v.reason.split(":")[0]
    (False, 'clearly worse on cold_items')
    """
    if "all" not in new or "all" not in old:
        raise ValueError("judge_every_slice needs the 'all' slice")
    slices: dict[str, dict[str, Any]] = {}
    worse: list[str] = []
    for name in [s for s in SLICES if s in new] + sorted(set(new) - set(SLICES)):
        n, o = list(new[name]), list(old.get(name, []))
        if len(n) != len(o):
            raise ValueError(f"slice {name}: {len(n)} new cases against {len(o)} old ones")
        gain, se = paired_difference(n, o)
        row = {"cases": len(n), "old": float(np.mean(o)) if o else 0.0, "new": float(np.mean(n)) if n else 0.0,
               "gain": gain, "se": se, "worse": bool(n) and clearly_better(o, n, worse_margin)[0]}
        if name == "all":
            row["better"] = clearly_better(n, o, margin, MIN_RELATIVE_GAIN)[0]
        elif row["worse"]:
            worse.append(name)
        slices[name] = row

    def said(name: str) -> str:
        r = slices[name]
        relative = f", {r['gain'] / r['old']:+.1%}" if r["old"] > 0 else ""
        return (f"{name} {r['new']:.4f} vs {r['old']:.4f}: {r['gain']:+.4f} (standard error {r['se']:.4f}"
                f"{relative}) on {r['cases']} cases")

    judged = [s for s in slices if s != "all" and slices[s]["cases"]]
    if worse:
        reason = "clearly worse on " + ", ".join(worse) + ": " + "; ".join(said(s) for s in worse)
    elif not slices["all"]["better"]:
        reason = (f"not clearly better on all users (more than a standard error and at least "
                  f"{MIN_RELATIVE_GAIN:.0%} of what serves): " + said("all"))
    else:
        reason = ("clearly better on all users, " + said("all") + "; clearly worse on no slice"
                  + (f" ({', '.join(judged)})" if judged else " (no other slice had cases)"))
    return SliceVerdict(slices["all"]["better"] and not worse, reason, slices)


def held_out_items(sequences: dict[str, list[str]], share: float, seed: int) -> frozenset[str]:
    """A seeded ``share`` of the items in ``sequences``: the items validation treats as new.

    >>> sorted(held_out_items({"u": ["a", "b", "c", "d"]}, 0.5, 0))
    ['b', 'd']
    """
    items = sorted({i for seq in sequences.values() for i in seq})
    return frozenset(random.Random(seed).sample(items, round(len(items) * share)))


def item_categories(catalogue: Any, ids: Iterable[str]) -> dict[str, list[str]]:
    """Each item's categories as the catalogue stores them (its payload), for ``preference_text``."""
    wanted, out = sorted(set(ids)), {}
    for start in range(0, len(wanted), 1000):
        for item_id, point in catalogue.get_many(wanted[start:start + 1000]).items():
            out[item_id] = list(point.payload.get("categories") or [])
    return out


def slice_cases(sequences: dict[str, list[str]], users: list[str], head: set[str] | frozenset[str],
                categories: dict[str, list[str]], cold: set[str] | frozenset[str] = frozenset()
                ) -> dict[str, list[SliceCase]]:
    """The validation cases of every slice, for each judged user's newest item (the target):

    - ``all``: the whole history before it;
    - ``cold_users``: only the history's newest item (an anonymous session);
    - ``cold_users_prefs``: no history, preferences made from the leaf categories of the history's
      items (``preference_text``, as the evaluation states them); users without categories have none;
    - ``long_tail``: the ``all`` cases (the same objects) whose target is outside ``head``;
    - ``cold_items``: users whose target is in ``cold``, with the history without ``cold``'s items
      (the scoring must not know those items' interactions either: ``without_items``).

    >>> cases = slice_cases({"u": ["a", "b", "c"]}, ["u"], {"a"}, {"a": ["Pens"]}, cold={"c"})
    >>> [(s, [(c.history, c.target, c.preferences) for c in cs]) for s, cs in cases.items()][1:4]
    [('cold_items', [(('a', 'b'), 'c', None)]), ('cold_users', [(('b',), 'c', None)]), \
('cold_users_prefs', [((), 'c', 'Interested in: Pens')])]
    """
    out: dict[str, list[SliceCase]] = {s: [] for s in SLICES}
    for user in users:
        history, target = sequences[user][:-1], sequences[user][-1]
        if not history:
            continue
        case = SliceCase(user, tuple(history), target)
        out["all"].append(case)
        if target not in head:
            out["long_tail"].append(case)
        out["cold_users"].append(SliceCase(user, (history[-1],), target))
        stated = preference_text(history, categories)
        if stated:
            out["cold_users_prefs"].append(SliceCase(user, (), target, stated))
        if target in cold:
            warm = tuple(i for i in history if i not in cold)
            if warm:
                out["cold_items"].append(SliceCase(user, warm, target))
    return out


def without_items(sequences: dict[str, list[str]], items: set[str] | frozenset[str]) -> dict[str, list[str]]:
    """Every sequence without ``items`` (the log as if they had never been taken)."""
    return {u: [i for i in seq if i not in items] for u, seq in sequences.items()}


def index_of(sequences: dict[str, list[str]]) -> CoOccurrenceIndex:
    """A co-occurrence index holding exactly these sequences."""
    index = CoOccurrenceIndex()
    for user, sequence in sequences.items():
        for item in sequence:
            index.add(user, item)
    return index


def score_slices(cases: dict[str, list[SliceCase]],
                 score: Callable[[str, list[SliceCase]], list[float]]) -> dict[str, list[float]]:
    """Each slice's per-case metric: ``score(slice, cases)`` once per slice with cases; the long
    tail is read off "all" (its cases are the same objects), not scored again."""
    out = {name: score(name, list(group)) if group else [] for name, group in cases.items() if name != "long_tail"}
    if "long_tail" in cases:
        at = {id(c): n for n, c in enumerate(cases.get("all", []))}
        if all(id(c) in at for c in cases["long_tail"]):
            out["long_tail"] = [out["all"][at[id(c)]] for c in cases["long_tail"]]
        else:
            out["long_tail"] = score("long_tail", list(cases["long_tail"])) if cases["long_tail"] else []
    return out


class _StatedLog:
    """The event log as if ``stated`` (request id -> text) were preferences stated by users nobody
    has seen; every other question goes to the log itself. Nothing is written."""

    def __init__(self, log: Any, stated: dict[str, str]):
        self._log, self._stated = log, stated

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def preferences(self, user_id: str) -> StatedPreferences | None:
        text = self._stated.get(user_id)
        return StatedPreferences(user_id, text, {}, 0.0) if text is not None else self._log.preferences(user_id)

    def user_item_ids(self, user_id: str, *args: Any, **kwargs: Any) -> set[str]:
        return set() if user_id in self._stated else self._log.user_item_ids(user_id, *args, **kwargs)

    def user_events(self, user_id: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [] if user_id in self._stated else self._log.user_events(user_id, *args, **kwargs)

    def event_counts(self, user_id: str, *args: Any, **kwargs: Any) -> dict[str, int]:
        return {} if user_id in self._stated else self._log.event_counts(user_id, *args, **kwargs)


class _StatedProfiles:
    """Profiles as if some never-seen users had stated preferences: their profile is the one
    ``Profiles.compute`` makes from the stated text alone, as the evaluation's replay stores it."""

    def __init__(self, profiles: Any, stated: dict[str, str]):
        self._profiles, self._stated = profiles, stated
        self.log = _StatedLog(profiles.log, stated)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._profiles, name)

    def vector(self, user_id: str) -> np.ndarray | None:
        if user_id in self._stated:
            return self._profiles.compute([], self.log.preferences(user_id))
        return self._profiles.vector(user_id)


def with_stated_preferences(recommender: Recommender, cases: Iterable[SliceCase]) -> Recommender:
    """``recommender`` answering the preference-only ``cases`` as requests of never-seen users
    (``STATED_PREFIX`` + user) who stated those preferences, with nothing written to the log or the
    store (a trainer may run on the service's own data directory)."""
    stated = {STATED_PREFIX + c.user: c.preferences for c in cases if c.preferences}
    view = copy.copy(recommender)
    view.profiles = _StatedProfiles(recommender.profiles, stated)
    return view


def slice_request(case: SliceCase, k: int, history_items: int = HISTORY_ITEMS,
                  diversity: float | None = 0.0) -> RecommendRequest:
    """The request a slice case makes: its history (newest ``history_items``), or, preference-only,
    the stated-preferences user of ``with_stated_preferences``. No reranker; ``diversity`` 0: pure
    relevance (None: the served default)."""
    if case.preferences is not None and not case.history:
        return RecommendRequest(user_id=STATED_PREFIX + case.user, k=k, rerank=False, diversity=diversity)
    return RecommendRequest(history=list(case.history[-history_items:]), k=k, rerank=False, diversity=diversity)
