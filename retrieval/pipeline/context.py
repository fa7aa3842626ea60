"""Step "build the context": a request resolved once into what every candidate source reads
(vectors, history, exclusions, texts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retrieval.pipeline.config import RecommendConfig
from retrieval.pipeline.request import RecommendRequest, ReplayOptions
from retrieval.state.catalogue import Catalogue
from retrieval.state.profiles import Profiles
from retrieval.storage.vector_store import ItemFilter


@dataclass
class RecommendContext:
    """Everything the sources may use for one request, resolved once."""

    pool: int
    item_filter: ItemFilter | None = None
    exclude: set[str] = field(default_factory=set)
    query_text: str | None = None
    query_vector: np.ndarray | None = None
    profile_vector: np.ndarray | None = None
    history: list[str] = field(default_factory=list)  # distinct item ids, oldest first
    history_titles: list[str] = field(default_factory=list)  # titles of the newest history items
    preference_text: str | None = None  # the user's stated preferences, if any
    # The catalogue categories stated preferences name, in their order (preference requests only;
    # set where candidates are gathered).
    stated_categories: tuple[str, ...] = ()
    leave_out_user: str | None = None  # collaborative signal without this user's own log (training)
    request_type: str = "none"  # what the request has to go on: see ``request_type``


def request_type(req: RecommendRequest, ctx: RecommendContext) -> str:
    """What a request has to go on, one of ``config.REQUEST_TYPES``: ``query`` (a search query, with
    or without anything else), ``history`` (a known user's items), ``session`` (items sent with the
    request by someone without an account), ``preferences`` (stated preferences alone), ``none``.
    Each type has its own fusion weights (``RecommendConfig.request_weights``).

    >>> request_type(RecommendRequest(history=["a"]), RecommendContext(pool=1, history=["a"]))
    'session'
    """
    if ctx.query_text:
        return "query"
    if ctx.history:
        return "history" if req.user_id else "session"
    if ctx.profile_vector is not None or ctx.preference_text:
        return "preferences"
    return "none"


def build_context(req: RecommendRequest, options: ReplayOptions, profiles: Profiles, catalogue: Catalogue,
                  config: RecommendConfig) -> tuple[RecommendContext, str]:
    """The context for an understood request, and where its profile vector came from (``stored``:
    the user's written profile; ``computed``: built for this request from an ad-hoc history or
    without some items; ``none``)."""
    ctx = RecommendContext(pool=max(config.min_pool, 4 * req.k), item_filter=req.item_filter,
                           leave_out_user=options.leave_out_user)
    profile = "none"
    limit = profiles.config.max_events
    history: list[str] = []
    if req.user_id:
        # The co-occurrence index already holds the user's distinct items in order (the same
        # positive event types), so the hot path reads no events from the log.
        history = profiles.index.history(req.user_id)[-limit:]
        # Disliked items are never shown again, even with exclude_seen false.
        ctx.exclude |= profiles.log.user_item_ids(req.user_id, types=None if req.exclude_seen else ("dislike",))
    if req.history:
        # Each requested item once, at its latest position, after the user's own items.
        requested = list(reversed(dict.fromkeys(reversed(req.history))))
        requested_set = set(requested)
        history = [i for i in history if i not in requested_set] + requested
        if req.exclude_seen:
            ctx.exclude |= requested_set
    ctx.exclude |= set(req.never_show)
    gone = set(options.without_items)
    if gone:
        history = [i for i in history if i not in gone]
    stated = profiles.log.preferences(req.user_id) if req.user_id else None
    if stated is not None and stated.preferences:
        ctx.preference_text = stated.preferences
    if req.history or gone:
        events = profiles.log.user_events(req.user_id, limit=limit) if req.user_id else []
        ctx.profile_vector = profiles.compute([e for e in events if e.item_id not in gone], stated,
                                              extra_items=[i for i in req.history if i not in gone])
        profile = "computed" if ctx.profile_vector is not None else "none"
    elif req.user_id:
        ctx.profile_vector = profiles.vector(req.user_id)
        profile = "stored" if ctx.profile_vector is not None else "none"
    ctx.history = history
    if req.query and req.query.strip():
        ctx.query_text = req.query.strip()
        ctx.query_vector = profiles.texts.get(ctx.query_text)
    if history and not ctx.query_text:
        newest = history[-config.lexical_history_items:]
        payloads = catalogue.get_many(newest)
        ctx.history_titles = [payloads[i].payload["title"] for i in reversed(newest) if i in payloads]
    ctx.request_type = request_type(req, ctx)
    return ctx, profile
