"""The one id rule and the one text rule, and the caps on what one item or user may store."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.limits import ATTRIBUTE_VALUE_MAX_CHARS, MAX_ATTRIBUTES, MAX_CATEGORIES, NAME_MAX_CHARS
from retrieval.storage.records import (
    ID_PATTERN,
    InvalidRecord,
    check_id,
    check_text,
    parse_event,
    parse_item,
    parse_preferences,
)

NOW = 1_800_000_000.0
ITEM = {"id": "sku-1", "title": "Gel pen"}


@pytest.mark.parametrize("value, reason", [
    ("", "non-empty"),
    ("   ", "non-empty"),
    ("a" * 257, "longer than 256"),
    ("a\x00b", "control"),
    ("a\x1fb", "control"),
    ("a\x7fb", "control"),  # DEL
    ("a\x85b", "control"),  # C1
    ("a/b", "'/'"),
    (".", "URL path"),
    ("..", "URL path"),
    (" a", "whitespace"),
    ("a\u00a0", "whitespace"),
])
def test_the_id_rule_refuses(value, reason):
    with pytest.raises(InvalidRecord) as err:
        check_id("user_id", value)
    assert err.value.field == "user_id" and reason in err.value.reason


@pytest.mark.parametrize("value", ["a", "...", ".a", "sku-1", "a b", "ürün:42", "a" * 256, "user@example.com", "a\\b"])
def test_the_id_rule_accepts(value):
    assert check_id("item_id", value) == value


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
       | st.sampled_from(["/", " ", "\t", "\x85", "\u2028", "\x00", "a", "é"]).map(lambda c: f"x{c}y")
       | st.sampled_from([".", "..", "...", ".x", "x."]))
def test_the_documented_pattern_is_the_id_rule(value):
    # The OpenAPI document states the rule as ID_PATTERN; it must agree with check_id, which enforces it.
    try:
        check_id("id", value)
        accepted = True
    except InvalidRecord:
        accepted = False
    assert accepted == bool(re.search(ID_PATTERN, value))


def test_the_text_rule_keeps_tabs_and_line_breaks_only():
    assert check_text("description", "one\ttwo\nthree\r\n", 100) == "one\ttwo\nthree\r\n"
    for bad in ("a\x00", "a\x07", "a\x0b", "a\x1b[31m", "a\x7f", "a\x9b"):
        with pytest.raises(InvalidRecord) as err:
            check_text("description", bad, 100)
        assert err.value.field == "description"
    with pytest.raises(InvalidRecord, match="longer than 3"):
        check_text("query", "abcd", 3)


@pytest.mark.parametrize("extra, field", [
    ({"id": "a/b"}, "id"),
    ({"id": " sku"}, "id"),
    ({"title": "Gel\x00pen"}, "title"),
    ({"description": "bell\x07"}, "description"),
    ({"brand": "Pi\nlot"}, "brand"),
    ({"brand": "P" * (NAME_MAX_CHARS + 1)}, "brand"),
    ({"categories": ["Office", "Pe\x1bns"]}, "categories[1]"),
    ({"categories": [f"c{i}" for i in range(MAX_CATEGORIES + 1)]}, "categories"),
    ({"attributes": {f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)}}, "attributes"),
    ({"attributes": {"k" * (NAME_MAX_CHARS + 1): 1}}, "attributes"),
    ({"attributes": {"": 1}}, "attributes"),
    ({"attributes": {"colour\x00": "red"}}, "attributes"),
    ({"attributes": {"note": "x" * (ATTRIBUTE_VALUE_MAX_CHARS + 1)}}, "attributes.note"),
    ({"attributes": {"note": "a\x00b"}}, "attributes.note"),
    ({"attributes": {"big": 2**64}}, "attributes.big"),
    ({"attributes": {"nan": float("nan")}}, "attributes.nan"),
    ({"price": "5"}, "price"),
])
def test_items_obey_the_rules(extra, field):
    with pytest.raises(InvalidRecord) as err:
        parse_item({**ITEM, **extra})
    assert err.value.field == field


def test_a_valid_item_keeps_its_attribute_types():
    item = parse_item({**ITEM, "description": "Smooth.\nRefillable.", "attributes": {
        "pack": 12, "weight_g": 10.5, "refillable": True, "colour": "blue", "serial": 2**63 - 1}})
    assert item.attributes == {"pack": 12, "weight_g": 10.5, "refillable": True, "colour": "blue", "serial": 2**63 - 1}
    assert type(item.attributes["pack"]) is int


@pytest.mark.parametrize("raw, field", [
    ({"user_id": "u", "type": "rating", "item_id": "a", "value": "5"}, "value"),
    ({"user_id": 5, "type": "view", "item_id": "a"}, "user_id"),
    ({"user_id": "u/1", "type": "view", "item_id": "a"}, "user_id"),
    ({"user_id": "u", "type": "view", "item_id": "a\x00"}, "item_id"),
    ({"user_id": "u", "type": "view", "item_id": "a", "timestamp": NOW + 2 * 86400}, "timestamp"),
    ({"user_id": "u", "type": "view", "item_id": "a", "timestamp": "1969-12-31T00:00:00Z"}, "timestamp"),
    ({"user_id": "u", "type": "view", "item_id": "a", "timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp"),
    ({"user_id": "u", "type": "click", "item_id": "a", "query": "x" * 3000}, "query"),
    ({"user_id": "u", "type": "search", "query": "red\x00pens"}, "query"),
])
def test_events_obey_the_rules_and_are_not_coerced(raw, field):
    with pytest.raises(InvalidRecord) as err:
        parse_event(raw, NOW)
    assert err.value.field == field


def test_numeric_and_iso_timestamps_are_judged_alike():
    ahead = NOW + 3600  # within a day: clocks differ
    assert parse_event({"user_id": "u", "type": "view", "item_id": "a", "timestamp": ahead}, NOW).timestamp == ahead
    assert parse_event({"user_id": "u", "type": "view", "item_id": "a", "timestamp": 1_700_000_000}, NOW).timestamp \
        == 1_700_000_000.0


def test_stated_preferences_obey_the_rules():
    assert parse_preferences("  fountain pens\n", {"tier": "gold", "age": 40}) == \
        ("fountain pens", {"tier": "gold", "age": 40})
    assert parse_preferences("   ", {}) == (None, {})
    with pytest.raises(InvalidRecord) as err:
        parse_preferences("pens\x00", {})
    assert err.value.field == "preferences"
    with pytest.raises(InvalidRecord) as err:
        parse_preferences(None, {str(i): i for i in range(100_000)})
    assert err.value.field == "attributes"
