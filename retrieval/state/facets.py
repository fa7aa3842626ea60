"""The names a catalogue knows (brands, categories, titles) and how text is split into words for
matching them: what query parsing matches against and what an explanation's guard checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


def words(text: str) -> list[str]:
    """Lower-case words, keeping the characters product names use.

    >>> words("3M Post-it notes, 4x6 & more")
    ['3m', 'post-it', 'notes', '4x6', 'more']
    """
    return re.findall(r"[a-z0-9][a-z0-9'&+-]*", text.lower())


@dataclass
class Facets:
    """What the catalogue knows: brand and category names as written, keyed by lower case."""

    brands: dict[str, str] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)  # what an explanation's guard checks names against

    @classmethod
    def from_payloads(cls, payloads: list[dict[str, Any]]) -> "Facets":
        return cls().with_payloads(payloads)

    def with_payloads(self, payloads: list[dict[str, Any]]) -> "Facets":
        """A new Facets with these items' names added (copy on write: readers never see a change)."""
        facets = Facets(dict(self.brands), dict(self.categories), list(self.titles))
        for p in payloads:
            if p.get("brand"):
                facets.brands.setdefault(p["brand"].lower(), p["brand"])
            for c in p.get("categories") or ():
                facets.categories.setdefault(c.lower(), c)
            if p.get("title"):
                facets.titles.append(p["title"])
        return facets

    def vocabulary(self) -> dict[str, list[str]]:
        return {"brands": list(self.brands.values()), "categories": list(self.categories.values()),
                "titles": self.titles}
