import pytest

from retrieval.storage.records import InvalidRecord, parse_event, parse_item, point_id

NOW = 1_800_000_000.0


@pytest.mark.parametrize("raw, field", [
    ({"title": "x"}, "id"),
    ({"id": "a"}, "title"),
    ({"id": "", "title": "x"}, "id"),
    ({"id": "a", "title": "   "}, "title"),
    ({"id": "a", "title": 5}, "title"),
    ({"id": "a", "title": "x", "price": -1}, "price"),
    ({"id": "a", "title": "x", "price": "cheap"}, "price"),
    ({"id": "a", "title": "x", "categories": "Pens"}, "categories"),
    ({"id": "a", "title": "x", "categories": ["ok", " "]}, "categories[1]"),
    ({"id": "a", "title": "x", "colour": "red"}, "colour"),
    ({"id": "a\x00b", "title": "x"}, "id"),
    ({"id": "a" * 300, "title": "x"}, "id"),
])
def test_bad_items_name_the_field(raw, field):
    with pytest.raises(InvalidRecord) as err:
        parse_item(raw)
    assert err.value.field == field
    assert err.value.reason


def test_item_is_normalised_for_filters():
    item = parse_item({"id": "a", "title": " Pen ", "brand": "Pilot", "categories": ["Pens", "Pens", "Gel"], "price": 3})
    assert item.title == "Pen"
    assert item.categories == ["Pens", "Gel"]
    payload = item.payload()
    assert payload["brand_key"] == "pilot" and payload["category_keys"] == ["pens", "gel"]
    assert payload["price"] == 3.0


@pytest.mark.parametrize("raw, field", [
    ({"type": "view", "item_id": "a"}, "user_id"),
    ({"user_id": "u", "type": "poke", "item_id": "a"}, "type"),
    ({"user_id": "u", "type": "view"}, "item_id"),
    ({"user_id": "u", "type": "search"}, "query"),
    ({"user_id": "u", "type": "rating", "item_id": "a"}, "value"),
    ({"user_id": "u", "type": "rating", "item_id": "a", "value": 9}, "value"),
    ({"user_id": "u", "type": "view", "item_id": "a", "timestamp": "last tuesday"}, "timestamp"),
    ({"user_id": "u", "type": "view", "item_id": "a", "timestamp": "2999-01-01T00:00:00Z"}, "timestamp"),
])
def test_bad_events_name_the_field(raw, field):
    with pytest.raises(InvalidRecord) as err:
        parse_event(raw, NOW)
    assert err.value.field == field


def test_event_timestamps():
    assert parse_event({"user_id": "u", "type": "view", "item_id": "a"}, NOW).timestamp == NOW
    e = parse_event({"user_id": "u", "type": "view", "item_id": "a", "timestamp": "2026-01-01T00:00:00"}, NOW)
    assert e.timestamp == 1767225600.0  # naive ISO-8601 is UTC
    s = parse_event({"user_id": "u", "type": "search", "query": " red pens "}, NOW)
    assert s.query == "red pens" and s.item_id is None


def test_point_ids_are_deterministic_uuids():
    assert point_id("sku-1") == point_id("sku-1") != point_id("sku-2")
