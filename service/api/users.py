"""``/v1/users/{id}``: stated preferences (onboarding), profile summary (what the profile leans to, the
recent events), and forgetting."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, put
from litestar.exceptions import NotFoundException

from retrieval.engine import Engine
from retrieval.state.profiles import Profiles
from retrieval.storage.records import parse_preferences
from service.access import ADMIN, READ, SECURITY, WRITE, AccessKeys, Caller
from service.api.dependencies import ReindexJob
from service.api.errors import not_found
from service.api.schemas import Attributes, Text, UnsupportedMediaType, path_id

UserId = Annotated[str, path_id("external user id")]


class UserPut(msgspec.Struct, forbid_unknown_fields=True):
    """Stated tastes, e.g. from onboarding: ``preferences`` is free text ("quiet keyboards,
    fountain pens"), encoded into the user's profile; ``attributes`` are kept as given (the
    README's limits table bounds both)."""

    preferences: Text | None = None
    attributes: Attributes = {}

    def __post_init__(self) -> None:
        self.preferences, self.attributes = parse_preferences(self.preferences, self.attributes)


class Share(msgspec.Struct):
    name: str
    share: float


class Leaning(msgspec.Struct):
    """What the profile leans to: the categories (an item's most specific one) and brands of the
    items the profile is made of, each with its share of their positive weight (recency and event
    type weigh as in the profile itself); the top five of each (``Profiles.summary``)."""

    categories: list[Share]
    brands: list[Share]


class RecentEvent(msgspec.Struct):
    type: str
    item_id: str | None
    title: str | None  # None: a search, or an item no longer in the catalogue
    at: float  # when it happened, seconds since the epoch
    query: str | None = None  # a search's words


class UserOut(msgspec.Struct):
    id: str
    event_counts: dict[str, int]
    total_events: int
    recent_items: list[str]
    preferences: str | None
    attributes: Attributes
    has_profile: bool
    leaning: Leaning
    recent_events: list[RecentEvent]  # newest first


class TrainedOnUser(msgspec.Struct):
    """A trained model version whose training data held the user's events: forgetting removes the
    user from the data, not from the model's weights; retraining does (``certain``: False for a
    version trained before the log position was recorded)."""

    kind: str
    version: str
    accepted: bool
    certain: bool


class Forgotten(msgspec.Struct):
    id: str
    forgotten: bool
    events_deleted: int
    models_trained_on_user: list[TrainedOnUser]


class UserController(Controller):
    path = "/v1/users"
    tags = ["users"]
    security = SECURITY

    @put("/{user_id:str}", opt={"scope": WRITE}, sync_to_thread=True, summary="Set a user's stated preferences",
         raises=[UnsupportedMediaType])
    def put_user(self, user_id: UserId, data: UserPut, profiles: Profiles) -> UserOut:
        profiles.set_preferences(user_id, data.preferences, data.attributes)
        return msgspec.convert(profiles.summary(user_id), UserOut)

    @get("/{user_id:str}", opt={"scope": READ}, sync_to_thread=True, summary="A user's profile summary",
         raises=[NotFoundException])
    def get_user(self, user_id: UserId, profiles: Profiles) -> UserOut:
        summary = profiles.summary(user_id)
        if summary is None:
            raise not_found("user", user_id)
        return msgspec.convert(summary, UserOut)

    @delete("/{user_id:str}", opt={"scope": ADMIN}, sync_to_thread=True,
            summary="Forget a user: events, preferences, profile", status_code=200)
    def forget(self, user_id: UserId, engine: Engine, access_keys: AccessKeys, caller: Caller | None,
               reindex_job: ReindexJob) -> Forgotten:
        """Deletes the user's events and preferences from the log (secure delete: no copy left in
        free pages or the write-ahead log), their profile, and their part of the co-occurrence index
        and popularity; answers which trained models learned from them. Idempotent. 409 while a
        reindex runs (it is rebuilding every profile from the log, and could write this one back)."""
        with reindex_job.writing("forget the user"):  # its profile rebuild could write this one back
            done = engine.forget_user(user_id)
        access_keys.audit(caller, "forget user", done.audit_target, done.describe())
        return Forgotten(user_id, done.forgotten, done.events_deleted,
                         [TrainedOnUser(**m) for m in done.models_trained_on_user])
