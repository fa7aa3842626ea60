"""User profiles: one vector per user, aggregated from what they did and what they said they like.

The profile lives in the same space as item vectors, so retrieving items for a user is a nearest
neighbour query, and a user with a single click or a single sentence of stated taste already has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# How much each kind of event says about a user's taste. Negative weights push the profile away.
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "search": 1.5,
    "add_to_cart": 3.0,
    "like": 3.0,
    "purchase": 4.0,
    "rating": 0.0,  # derived from the value, see event_weight
    "dislike": -2.0,
}


def event_weight(event_type: str, value: float | None = None) -> float:
    """Weight of one event; a rating's weight follows its value around the 1..5 midpoint."""
    if event_type == "rating":
        rating = 3.0 if value is None else float(value)
        return (rating - 3.0) * 1.5
    return EVENT_WEIGHTS[event_type]


@dataclass(frozen=True)
class ProfileEvent:
    """One event as the profile sees it: the vector of what it was about (item or search text)."""

    vector: np.ndarray
    event_type: str
    timestamp: float
    value: float | None = None


def position_weights(n: int, position_decay: float) -> list[float]:
    """The weight of each of ``n`` items, oldest first, by position alone: ``position_decay`` per
    newer item, the newest 1.

    >>> position_weights(3, 0.5)
    [0.25, 0.5, 1.0]
    """
    return [position_decay ** (n - 1 - i) for i in range(n)]


def event_weights(events: list[ProfileEvent], now: float, half_life_days: float = 30.0,
                  position_decay: float = 0.9) -> list[float]:
    """Each event's signed weight in the profile: ``event_weight x 0.5**(age/half_life) x
    position_decay**(n_newer_events)`` (what ``aggregate_profile`` sums, and what explanations report)."""
    return [event_weight(e.event_type, e.value) * 0.5 ** (max(0.0, now - e.timestamp) / 86400.0 / half_life_days)
            * p for e, p in zip(events, position_weights(len(events), position_decay))]


def aggregate_profile(
    events: list[ProfileEvent],
    now: float,
    preference_vector: np.ndarray | None = None,
    half_life_days: float = 30.0,
    position_decay: float = 0.9,
    preference_prior: float = 2.0,
) -> np.ndarray | None:
    """Weighted, recency-decayed mean of event vectors, blended with stated preferences.

    ``events`` are in chronological order. Each event counts ``event_weight x 0.5**(age/half_life)
    x position_decay**(n_newer_events)``: time decay follows the clock, position decay follows
    behaviour, so a burst of clicks a second ago still puts the newest one first. The stated
    preference vector enters with a fixed prior mass, so it dominates for a user with no events and
    fades as evidence accumulates. Returns a unit vector, or None when there is nothing to go on.

    >>> v = aggregate_profile([ProfileEvent(np.array([1.0, 0.0]), "click", 0.0)], now=0.0)
    >>> v.round(3).tolist()
    [1.0, 0.0]
    """
    total = None
    positive_mass = 0.0
    for event, weight in zip(events, event_weights(events, now, half_life_days, position_decay)):
        if weight == 0.0:
            continue
        contribution = weight * event.vector
        total = contribution if total is None else total + contribution
        if weight > 0:
            positive_mass += weight
    behaviour = None
    if total is not None:
        norm = float(np.linalg.norm(total))
        if norm > 1e-9 and positive_mass > 0:
            behaviour = total / norm
    if preference_vector is not None:
        pref = preference_vector / max(float(np.linalg.norm(preference_vector)), 1e-9)
        if behaviour is None:
            return pref.astype(np.float32)
        alpha = preference_prior / (preference_prior + positive_mass)
        mixed = (1 - alpha) * behaviour + alpha * pref
        return (mixed / max(float(np.linalg.norm(mixed)), 1e-9)).astype(np.float32)
    if behaviour is None:
        return None
    return behaviour.astype(np.float32)
