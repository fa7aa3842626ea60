import numpy as np
import pytest

from encoders import ProfileEvent, aggregate_profile, item_text
from encoders.profile import event_weight

A = np.array([1.0, 0.0, 0.0], dtype=np.float32)
B = np.array([0.0, 1.0, 0.0], dtype=np.float32)
C = np.array([0.0, 0.0, 1.0], dtype=np.float32)


def test_no_evidence_gives_no_profile():
    assert aggregate_profile([], now=0.0) is None


def test_stronger_event_types_weigh_more():
    profile = aggregate_profile([ProfileEvent(A, "view", 0.0), ProfileEvent(B, "purchase", 0.0)], now=0.0,
                                position_decay=1.0)
    assert profile[1] > profile[0] > 0
    assert np.isclose(np.linalg.norm(profile), 1.0)


def test_dislike_pushes_away():
    base = aggregate_profile([ProfileEvent(A, "click", 0.0), ProfileEvent(B, "click", 0.0)], now=0.0)
    pushed = aggregate_profile([ProfileEvent(A, "click", 0.0), ProfileEvent(B, "click", 0.0),
                                ProfileEvent(B, "dislike", 0.0)], now=0.0)
    assert pushed[1] < base[1]


def test_old_events_decay_by_time_and_position():
    day = 86400.0
    profile = aggregate_profile([ProfileEvent(A, "click", 0.0), ProfileEvent(B, "click", 60 * day)], now=60 * day,
                                half_life_days=30.0, position_decay=1.0)
    # A is two half-lives old: a quarter of B's weight.
    assert profile[0] / profile[1] == pytest.approx(0.25, rel=1e-3)
    same_time = aggregate_profile([ProfileEvent(A, "click", 0.0), ProfileEvent(B, "click", 0.0)], now=0.0,
                                  position_decay=0.5)
    assert same_time[0] / same_time[1] == pytest.approx(0.5, rel=1e-3)


def test_preferences_dominate_cold_users_and_fade_with_evidence():
    only_pref = aggregate_profile([], now=0.0, preference_vector=C)
    assert np.allclose(only_pref, C)
    one = aggregate_profile([ProfileEvent(A, "click", 0.0)], now=0.0, preference_vector=C)
    many = aggregate_profile([ProfileEvent(A, "purchase", 0.0)] * 10, now=0.0, preference_vector=C,
                             position_decay=1.0)
    assert one[2] > many[2] > 0
    assert many[0] > one[0]


def test_rating_weight_follows_value():
    assert event_weight("rating", 5) > 0 > event_weight("rating", 1)
    assert event_weight("rating", 3) == 0


def test_item_text_includes_facts_and_truncates_description():
    text = item_text({"title": "Mini stapler", "brand": "Max", "categories": ["Office", "Staplers"],
                      "description": "x" * 5000})
    assert text.startswith("Mini stapler. Brand: Max. Category: Office, Staplers.")
    assert len(text) < 600
