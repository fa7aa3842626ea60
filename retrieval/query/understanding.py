"""A request's sentence read against the live catalogue: the parser built over its current facets,
items named by title ("like the Swingline Optima"), the user's last item ("the one I bought"),
and a check that a named category is what the query is about.

Example::

    understanding = QueryUnderstanding(catalogue, index, text_vector=profiles.texts.get)
    parsed = understanding.parse("a quieter keyboard than the one I bought, under $50", user_id="u1")
    parsed.price_max, parsed.anchor
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from retrieval.query.parser import ANCHOR_FILLER, Anchor, ParsedQuery, QueryParser
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import CoOccurrenceIndex
from retrieval.state.facets import words

# (query, candidate brands, candidate categories) -> constraints a language model suggests.
Suggest = Callable[[str, list[str], list[str]], dict[str, Any]]


def find_by_title(catalogue: Catalogue, phrase: str, min_overlap: float = 0.6) -> Anchor | None:
    """The item a phrase names ("the Swingline Optima stapler"): BM25 over item text, kept only
    if most of the phrase's words are in the item's title."""
    wanted = [w for w in words(phrase) if w not in ANCHOR_FILLER]
    if not wanted:
        return None
    hits = catalogue.store.search_sparse(catalogue.collection, catalogue.bm25.encode_query(" ".join(wanted)), 5,
                                         None, ())
    payloads = catalogue.get_many([h.id for h in hits])
    for hit in hits:
        if hit.id not in payloads:
            continue
        payload = payloads[hit.id].payload
        title_words = set(words(payload.get("title", "")))
        if sum(w in title_words for w in wanted) / len(wanted) >= min_overlap:
            return Anchor(hit.id, payload.get("title", ""), payload.get("price"))
    return None


class QueryUnderstanding:
    """Parses sentences against one catalogue; ``suggest`` (optional) is a language model's
    constraint suggestions, validated by the parser against the catalogue's facets."""

    def __init__(self, catalogue: Catalogue, index: CoOccurrenceIndex,
                 text_vector: Callable[[str], np.ndarray], suggest: Suggest | None = None):
        self.catalogue, self.index, self.text_vector, self.suggest = catalogue, index, text_vector, suggest
        self._parser: QueryParser | None = None  # rebuilt when the catalogue's facets change
        self._names: QueryParser | None = None  # the same, reading category names only
        self._stated: dict[str, tuple[str, ...]] = {}  # sentence -> its categories, for ``_names``

    def parser(self) -> QueryParser:
        facets = self.catalogue.facets()
        parser = self._parser
        if parser is None or parser.facets is not facets or parser.suggest is not self.suggest:
            parser = self._parser = QueryParser(facets, lambda phrase: find_by_title(self.catalogue, phrase),
                                                self.last_item, self.suggest)
        return parser

    def stated_categories(self, text: str) -> tuple[str, ...]:
        """The catalogue's category names a sentence of stated preferences names, as the catalogue
        writes them, found as a query's are (whole words, any case, singular or plural), in the
        order the sentence names them; no anchor lookup and no language model. On a catalogue with
        those categories, ``stated_categories("Interested in: ballpoint pens, a stapler")`` is
        ``('Ballpoint Pens', 'Staplers')`` (tests/retrieval/test_request_types.py)."""
        facets = self.catalogue.facets()
        names, stated = self._names, self._stated
        if names is None or names.facets is not facets:
            names, stated = self._names, self._stated = QueryParser(facets), {}
        found = stated.get(text)
        if found is None:  # a request's explanations ask again for every item: parse once
            if len(stated) >= 1024:
                stated.clear()
            found = stated[text] = tuple(names.parse(text).categories)
        return found

    def last_item(self, user_id: str) -> Anchor | None:
        """The user's newest item, for "the one I bought"."""
        history = self.index.history(user_id)
        point = self.catalogue.get(history[-1]) if history else None
        return Anchor(point.id, point.payload.get("title", ""), point.payload.get("price"), how="history") \
            if point is not None else None

    def parse(self, text: str, user_id: str | None = None) -> ParsedQuery:
        parsed = self.parser().parse(text, user_id=user_id)
        if parsed.categories:
            self.confirm_categories(parsed)
        return parsed

    def confirm_categories(self, parsed: ParsedQuery, top: int = 20, share: float = 0.25) -> None:
        """A category word is a constraint only if the query is about it: "lamp for my desk" names
        "desk" but means lamps. Kept when at least ``share`` of the query's nearest items are in it."""
        # The semantic text's vector: the request encodes it anyway (cached), so this costs no encode.
        vector = self.text_vector(parsed.semantic or parsed.text)
        hits = self.catalogue.store.search_dense(self.catalogue.collection, vector, top)
        payloads = self.catalogue.get_many([h.id for h in hits])
        keys = [{c.lower() for c in (p.payload.get("categories") or ())} for p in payloads.values()]
        kept = []
        for category in parsed.categories:
            found = sum(category.lower() in k for k in keys) / max(1, len(keys))
            if found >= share:
                kept.append(category)
            else:
                parsed.notes.append(f"'{category}' is mentioned but the query is about something else "
                                    f"({found:.0%} of its nearest items are in it): not enforced")
                parsed.matched = [m for m in parsed.matched if m.lower() not in category.lower()]
        parsed.categories = kept
