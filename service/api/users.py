"""``/v1/users/{id}``: stated preferences (onboarding), profile summary, and forgetting."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, put
from litestar.exceptions import NotFoundException

from retrieval.state.profiles import Profiles
from retrieval.storage.records import parse_preferences
from service.access import ADMIN, READ, SECURITY, WRITE, AccessKeys, Caller
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


class UserOut(msgspec.Struct):
    id: str
    event_counts: dict[str, int]
    total_events: int
    recent_items: list[str]
    preferences: str | None
    attributes: Attributes
    has_profile: bool


class Forgotten(msgspec.Struct):
    id: str
    forgotten: bool


class UserController(Controller):
    path = "/v1/users"
    tags = ["users"]
    security = SECURITY

    @put("/{user_id:str}", opt={"scope": WRITE}, sync_to_thread=True, summary="Set a user's stated preferences",
         raises=[UnsupportedMediaType])
    def put_user(self, user_id: UserId, data: UserPut, profiles: Profiles) -> UserOut:
        profiles.set_preferences(user_id, data.preferences, data.attributes)
        return UserOut(**profiles.summary(user_id))

    @get("/{user_id:str}", opt={"scope": READ}, sync_to_thread=True, summary="A user's profile summary",
         raises=[NotFoundException])
    def get_user(self, user_id: UserId, profiles: Profiles) -> UserOut:
        summary = profiles.summary(user_id)
        if summary is None:
            raise not_found("user", user_id)
        return UserOut(**summary)

    @delete("/{user_id:str}", opt={"scope": ADMIN}, sync_to_thread=True,
            summary="Forget a user: events, preferences, profile", status_code=200)
    def forget(self, user_id: UserId, profiles: Profiles, access_keys: AccessKeys, caller: Caller | None) -> Forgotten:
        # Idempotent: forgetting an unknown user succeeds and says there was nothing to forget.
        forgotten = profiles.forget(user_id)
        access_keys.audit(caller, "forget user", user_id, "forgotten" if forgotten else "nothing to forget")
        return Forgotten(user_id, forgotten)
