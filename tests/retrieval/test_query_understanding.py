"""Table-driven: sentences -> constraints, anchor and semantic text, including ones that must not
produce a constraint."""

import pytest

from retrieval.query.parser import Anchor, QueryParser
from retrieval.state.facets import Facets, words
from retrieval.storage.vector_store import ItemFilter

FACETS = Facets.from_payloads([
    {"brand": "Avery", "categories": ["Office Products", "Labels"]},
    {"brand": "Swingline", "categories": ["Office Products", "Staplers"]},
    {"brand": "Pilot", "categories": ["Office Products", "Pens", "Ballpoint Pens"]},
    {"brand": "3M", "categories": ["Office Products", "Sticky Notes"]},
    {"brand": "Universal", "categories": ["Office Products", "Paper"]},
    {"brand": "Post-it", "categories": ["Office Products", "Sticky Notes"]},
    {"brand": "HON", "categories": ["Furniture", "Office Chairs"]},
    {"brand": "Fellowes", "categories": ["Office Products", "Shredders"]},
    {"brand": "Acme", "categories": ["Books", "Mystery"]},
    {"brand": "Bostitch", "categories": ["Office Products", "Staplers"]},
    {"brand": "Moleskine", "categories": ["Office Products", "Notebooks"]},
    {"brand": "Tensor", "categories": ["Lighting", "Desk Lamps"]},
    {"brand": "Sony", "categories": ["Electronics", "Headphones"]},
    {"brand": "Bose", "categories": ["Electronics", "Headphones"]},
    {"brand": "Jabra", "categories": ["Electronics", "Headphones"]},
    {"brand": "Logitech", "categories": ["Electronics", "Mice"]},
    {"brand": "Lamy", "categories": ["Office Products", "Pens"]},
    {"brand": "Keychron", "categories": ["Electronics", "Keyboard Kits"], "title": "Keychron Max 196 compact keyboard"},
    # A brand that is also a word the catalogue writes in lower case.
    {"brand": "Fully", "categories": ["Furniture", "Standing Desks"], "title": "Jarvis desk frame, fully adjustable"},
])
TITLES = {
    "s1": ("Swingline Optima Grip Full Strip Stapler", 24.99),
    "c1": ("HON Ignition Mesh Task Chair", 189.0),
    "n1": ("Moleskine Classic Hard Cover Notebook", 17.5),
    "x1": ("Mystery Cat Cozy Paperback", None),
    "k1": ("Keychron Max 196 compact keyboard, black", 81.17),
}
HISTORY = {"u1": Anchor("s1", TITLES["s1"][0], TITLES["s1"][1], how="history")}


def find_anchor(phrase: str):
    wanted = [w for w in words(phrase) if w not in {"the", "a", "one", "my"}]
    for item_id, (title, price) in TITLES.items():
        title_words = set(words(title))
        if wanted and sum(w in title_words for w in wanted) / len(wanted) >= 0.6:
            return Anchor(item_id, title, price)
    return None


PARSER = QueryParser(FACETS, find_anchor, lambda user: HISTORY.get(user))

# (query, user, expected constraints, expected anchor id, semantic text must contain / equal)
CASES = [
    # prices
    ("a stapler under $15", None, {"price_max": 15.0, "categories": ["Staplers"]}, None, "a stapler"),
    ("stapler under 15 dollars", None, {"price_max": 15.0, "categories": ["Staplers"]}, None, "stapler"),
    ("pens below $5", None, {"price_max": 5.0, "categories": ["Pens"]}, None, "pens"),
    ("notebooks less than 20 bucks", None, {"price_max": 20.0, "categories": ["Notebooks"]}, None, "notebooks"),
    ("office chairs between 100 and 200 dollars", None,
     {"price_min": 100.0, "price_max": 200.0, "categories": ["Office Chairs"]}, None, "office chairs"),
    ("desk lamp from $30 to $60", None, {"price_min": 30.0, "price_max": 60.0, "categories": ["Desk Lamps"]},
     None, "desk lamp"),
    ("shredder $50-$120", None, {"price_min": 50.0, "price_max": 120.0, "categories": ["Shredders"]}, None,
     "shredder"),
    ("paper 10-20 dollars", None, {"price_min": 10.0, "price_max": 20.0, "categories": ["Paper"]}, None, "paper"),
    ("labels over $25", None, {"price_min": 25.0, "categories": ["Labels"]}, None, "labels"),
    # amounts in words, before a currency word only
    ("a stapler under fifty dollars", None, {"price_max": 50.0, "categories": ["Staplers"]}, None, "a stapler"),
    ("notebooks less than twenty-five bucks", None, {"price_max": 25.0, "categories": ["Notebooks"]}, None,
     "notebooks"),
    ("office chairs between one hundred and two hundred and fifty dollars", None,
     {"price_min": 100.0, "price_max": 250.0, "categories": ["Office Chairs"]}, None, "office chairs"),
    ("office chairs between two and three hundred dollars", None,
     {"price_min": 200.0, "price_max": 300.0, "categories": ["Office Chairs"]}, None, "office chairs"),
    ("one stapler for two desks", None, {"categories": ["Staplers"]}, None, "one stapler for two desks"),
    ("a chair at least 150 dollars", None, {"price_min": 150.0}, None, "a chair"),
    ("sticky notes up to $8.50", None, {"price_max": 8.5, "categories": ["Sticky Notes"]}, None, "sticky notes"),
    ("gift for a writer around $40", None, {"price_min": 32.0, "price_max": 48.0}, None, "gift for a writer"),
    ("something nice for under 30", None, {"price_max": 30.0}, None, "something nice"),
    ("between $20 and $10 pens", None, {"price_min": 10.0, "price_max": 20.0, "categories": ["Pens"]}, None, "pens"),
    # numbers that are not prices
    ("paper over 500 sheets", None, {"categories": ["Paper"]}, None, "paper over 500 sheets"),
    ("a lamp under 2 pounds", None, {}, None, "a lamp under 2 pounds"),
    ("binder with more than 3 rings", None, {}, None, "binder with more than 3 rings"),
    ("12 pack of gel ink", None, {}, None, "12 pack of gel ink"),
    ("the 10 best planners of 2024", None, {}, None, "the 10 best planners of 2024"),
    ("cheap pens", None, {"categories": ["Pens"]}, None, "cheap pens"),
    ("not too expensive notebook", None, {"categories": ["Notebooks"]}, None, "not too expensive notebook"),
    # brands
    ("anything but Avery", None, {"exclude_brands": ["Avery"]}, None, ""),
    ("labels, not from Avery", None, {"exclude_brands": ["Avery"], "categories": ["Labels"]}, None, "labels"),
    ("stapler by Swingline", None, {"brands": ["Swingline"], "categories": ["Staplers"]}, None, "stapler"),
    ("Avery labels", None, {"brands": ["Avery"], "categories": ["Labels"]}, None, "Avery labels"),
    ("sticky notes without 3M", None, {"exclude_brands": ["3M"], "categories": ["Sticky Notes"]}, None,
     "sticky notes"),
    ("sticky notes except post-it", None, {"exclude_brands": ["Post-it"], "categories": ["Sticky Notes"]}, None,
     "sticky notes"),
    ("no Fellowes shredders", None, {"exclude_brands": ["Fellowes"], "categories": ["Shredders"]}, None,
     "shredders"),
    ("a universal remote holder", None, {}, None, "a universal remote holder"),
    ("pilot program planner", None, {}, None, "pilot program planner"),
    ("Pilot pens under $10", None, {"brands": ["Pilot"], "price_max": 10.0, "categories": ["Pens"]}, None,
     "Pilot pens"),
    # brand lists and negations
    ("headphones not from Sony, Bose or Jabra", None, {"exclude_brands": ["Sony", "Bose", "Jabra"],
                                                       "categories": ["Headphones"]}, None, "headphones"),
    ("a mouse that isn't Logitech", None, {"exclude_brands": ["Logitech"]}, None, "a mouse"),
    ("pens by Pilot or Lamy", None, {"brands": ["Pilot", "Lamy"], "categories": ["Pens"]}, None, "pens"),
    ("Fully adjustable standing desk under $500", None, {"price_max": 500.0, "categories": ["Standing Desks"]}, None,
     "Fully adjustable standing desk"),
    ("Sony headphones", None, {"brands": ["Sony"], "categories": ["Headphones"]}, None, "Sony headphones"),
    # prices written other ways
    ("a monitor under $1,500", None, {"price_max": 1500.0}, None, "a monitor"),
    ("pens no less than $20", None, {"price_min": 20.0, "categories": ["Pens"]}, None, "pens"),
    ("labels more expensive than $50", None, {"price_min": 50.0, "categories": ["Labels"]}, None, "labels"),
    ("pens $5 or less", None, {"price_max": 5.0, "categories": ["Pens"]}, None, "pens"),
    ("Max budget $50 for headphones", None, {"price_max": 50.0, "categories": ["Headphones"]}, None,
     "for headphones"),
    ("a keyboard like the Keychron Max 196 but cheaper", None, {"price_max": 81.16}, "k1", "a keyboard"),
    # anchors
    ("like the Swingline Optima stapler but cheaper", None, {"price_max": 24.98}, "s1", ""),
    ("similar to Moleskine Classic Notebook, not from Moleskine", None, {"exclude_brands": ["Moleskine"]}, "n1", ""),
    ("something like HON Ignition chair but more expensive", None, {"price_min": 189.01}, "c1", ""),
    ("a quieter stapler than the one I bought, under $50", "u1",
     {"price_max": 50.0, "categories": ["Staplers"]}, "s1", "a quieter stapler"),
    ("cheaper than the one I bought", "u1", {"price_max": 24.98}, "s1", ""),
    ("cheaper than what I bought", None, {}, None, ""),
    ("like new condition chair", None, {}, None, "like new condition chair"),
    ("cozy mystery novels like Agatha Christie", None, {"categories": ["Mystery"]}, None,
     "cozy mystery novels like Agatha Christie"),
    ("alternative to Mystery Cat Cozy Paperback but cheaper", None, {}, "x1", ""),
    # plain semantic queries: no constraint at all
    ("a quiet mechanical keyboard", None, {}, None, "a quiet mechanical keyboard"),
    ("ergonomic mouse for small hands", None, {}, None, "ergonomic mouse for small hands"),
    ("gifts for teachers", None, {}, None, "gifts for teachers"),
    ("under the desk cable tray", None, {}, None, "under the desk cable tray"),
    ("best value whiteboard", None, {}, None, "best value whiteboard"),
]


@pytest.mark.parametrize("query,user,constraints,anchor,semantic", CASES, ids=[c[0] for c in CASES])
def test_phrasings(query, user, constraints, anchor, semantic):
    parsed = PARSER.parse(query, user_id=user)
    assert parsed.interpreted()["constraints"] == constraints
    assert (parsed.anchor.id if parsed.anchor else None) == anchor
    assert parsed.semantic == semantic


def test_there_are_at_least_forty_phrasings_and_some_must_not_constrain():
    assert len(CASES) >= 40
    assert sum(1 for c in CASES if not c[2]) >= 10


def test_parsed_constraints_narrow_the_request_filter_never_widen_it():
    parsed = PARSER.parse("Pilot pens between $5 and $30")
    merged = parsed.item_filter(ItemFilter(price_max=20.0, exclude_brands=("Bic",)))
    assert merged.price_min == 5.0 and merged.price_max == 20.0
    assert merged.brands == ("Pilot",) and merged.exclude_brands == ("Bic",)
    assert PARSER.parse("a quiet keyboard").item_filter(None) is None


def test_relative_price_on_an_anchor_without_a_price_is_reported_not_guessed():
    parsed = PARSER.parse("like Mystery Cat Cozy Paperback but cheaper")
    assert parsed.anchor.id == "x1" and parsed.price_max is None
    assert "no price" in parsed.notes[0]


def test_price_bounds_that_rule_each_other_out_are_kept_and_said_not_swapped():
    parsed = PARSER.parse("like the Swingline Optima stapler but cheaper, over $25")
    assert parsed.anchor.id == "s1" and (parsed.price_min, parsed.price_max) == (25.0, 24.98)
    assert "nothing matches both" in parsed.notes[0]


@pytest.mark.parametrize("query,said", [("headphones under €50", "€50"), ("pens for 5 euros", "5 euros"),
                                        ("cheaper than the Acme Turbo 9000", "cheaper")])
def test_a_price_the_parser_cannot_apply_is_said_in_a_note(query, said):
    parsed = PARSER.parse(query)
    assert parsed.price_max is None and parsed.price_min is None
    assert any(said in note for note in parsed.notes), parsed.notes
