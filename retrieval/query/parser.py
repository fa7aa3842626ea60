"""Natural-language preference queries: hard constraints, an anchor item, and the semantic rest.

"a stapler under $15" -> price <= 15, semantic "a stapler". "like <title> but cheaper" -> anchor
item (found by BM25 over titles), price below the anchor's. "anything but Avery" -> brand excluded.
Category names the catalogue knows ("office chairs") become category constraints.

The parser is deterministic and conservative: a number is a price only with a currency word or a
price cue and no unit after it ("over 100 sheets" is not a price); a brand is a constraint only
with a cue ("by", "from", "not", "anything but") or when written as the catalogue writes it
("Avery labels"); an anchor is used only when most of its words are in one item's title.

Example::

    parser = QueryParser(catalogue_facets, find_anchor)
    parsed = parser.parse("office chairs between 100 and 200 dollars, not from Acme")
    parsed.price_min, parsed.price_max, parsed.exclude_brands, parsed.semantic
    # 100.0, 200.0, ['Acme'], 'office chairs'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from retrieval.state.facets import Facets, words
from retrieval.storage.vector_store import ItemFilter

# "1,500" is a thousand and a half; "15,99" (a decimal comma) and "15.99" are under sixteen.
_NUM = r"(\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?(?!\d)|\d{1,7}(?:[.,]\d{1,2})?(?!\d))"
_CUR_PRE = r"(?:\$|usd\s*|us\$)"
_CUR_POST = r"(?:\s*(?:dollars?|bucks|usd|\$))"
# A price amount: "$15", "15 dollars", "15" (the last only where a cue makes it a price).
_AMOUNT = rf"(?:{_CUR_PRE}\s*{_NUM}|{_NUM}{_CUR_POST}|{_NUM})"
# Words after a number that make it a quantity, not a price.
_UNITS = {
    "sheet", "sheets", "page", "pages", "pack", "packs", "count", "ct", "pc", "pcs", "piece", "pieces",
    "inch", "inches", "in", "ft", "feet", "foot", "mm", "cm", "m", "meter", "meters", "lb", "lbs",
    "pound", "pounds", "oz", "ounce", "ounces", "kg", "g", "gram", "grams", "gb", "tb", "mb", "w", "watt",
    "watts", "hour", "hours", "minute", "minutes", "year", "years", "month", "months", "day", "days",
    "people", "person", "persons", "users", "drawers", "drawer", "shelves", "colors", "colours",
    "x", "by", "percent", "%", "ppm", "dpi", "mah", "v", "volt", "volts", "degrees", "point", "pt",
    "sheet-feeder", "ream", "reams", "box", "boxes", "rolls", "roll", "labels", "pens", "pencils",
}
_MAX_CUES = (r"(?:under|below|(?<!no )(?<!not )less than|cheaper than|less expensive than|no more than|not more than|"
             r"at most|up to|max(?:imum)?(?:\s+budget)?(?:\s+of)?|budget(?:\s+of|\s+is)?|within|<=?)")
_MIN_CUES = (r"(?:over|above|(?<!no )(?<!not )more than|more expensive than|pricier than|costlier than|at least|"
             r"no less than|not less than|min(?:imum)?|starting at|>=?)")
# An amount in a currency the parser does not read: said in a note rather than silently dropped.
_FOREIGN_AMOUNT = r"(?:[€£¥]\s*\d[\d.,]*|\b\d[\d.,]*\s*(?:[€£¥]|euros?\b|eur\b|gbp\b|yen\b))"
# "max"/"min" before a bare number is as often a model name ("Keychron Max 196"): a price only with a currency.
_NAME_LIKE_CUES = {"max", "maximum", "min", "minimum"}
_CHEAPER = r"(?:cheaper|less expensive|lower[- ]priced|more affordable|for less)"
_PRICIER = r"(?:more expensive|pricier|higher[- ]end|premium(?: version)?)"
_OWNED = r"(?:the one i (?:bought|got|have|purchased|ordered)|what i (?:bought|got|have)|my last (?:purchase|order|one))"
_ANCHOR_CUES = r"(?:similar to|just like|like|alternative to|alternatives to|instead of|replacement for|than)"
_ANCHOR_STOP = (r"(?=,|;|\.|!|\?| but\b| and\b| not\b| under\b| below\b| over\b| above\b| from\b| by\b| without\b|"
                r" except\b| cheaper\b| less\b| more\b| between\b| for under\b| that\b| which\b|$)")
_EXCLUDE_CUES = (r"(?:anything but|everything but|but not|not from|not by|not made by|isn't|isn’t|is not|aren't|"
                 r"are not|no|not|except|excluding|without|other than|avoid)")
_INCLUDE_CUES = r"(?:made by|from|by|brand)"
# Between the names of one list: "not from Sony, Bose or Jabra".
_LIST_SEPARATOR = re.compile(r"\s*(?:,\s*(?:or\s+|and\s+|nor\s+)?|\s(?:or|and|nor)\s+|/)\s*")
_CONNECTIVES = {"and", "or", "for", "with", "but", "in", "on", "at", "please", "that", "which", "each", "per",
                "not", "no", "without", "from", "by", "if", "so", "total", "tops", "max"}
_STOPWORDS = {"a", "an", "the", "some", "any", "me", "i", "want", "need", "looking", "for", "show", "find", "please",
              "something", "anything", "one", "ones", "that", "is", "are", "but", "and", "or", "with", "to", "of",
              "in", "at", "it", "its", "my", "i'm", "im", "am", "like", "similar", "just", "than"}


@dataclass
class Anchor:
    id: str
    title: str
    price: float | None = None
    how: str = "title"  # "title": named in the query; "history": "the one I bought"


@dataclass
class ParsedQuery:
    """How a query was understood. ``semantic`` is what is left for meaning-based search."""

    text: str
    semantic: str
    price_min: float | None = None
    price_max: float | None = None
    brands: list[str] = field(default_factory=list)
    exclude_brands: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    anchor: Anchor | None = None
    relative_price: str | None = None  # "cheaper" / "pricier" than the anchor
    matched: list[str] = field(default_factory=list)  # the phrases that became constraints
    notes: list[str] = field(default_factory=list)

    @property
    def has_constraints(self) -> bool:
        return bool(self.price_min is not None or self.price_max is not None or self.brands or self.exclude_brands
                    or self.categories)

    def item_filter(self, base: ItemFilter | None = None) -> ItemFilter | None:
        """The request's own filter narrowed by the parsed constraints (both always apply)."""
        base = base or ItemFilter()
        if not self.has_constraints:
            return base if base != ItemFilter() else None
        price_min = max([v for v in (base.price_min, self.price_min) if v is not None], default=None)
        price_max = min([v for v in (base.price_max, self.price_max) if v is not None], default=None)
        return ItemFilter(
            categories=base.categories or tuple(self.categories),  # the request's own, when it names any
            brands=base.brands or tuple(self.brands),
            exclude_brands=tuple(dict.fromkeys([*base.exclude_brands, *self.exclude_brands])),
            price_min=price_min, price_max=price_max,
        )

    def interpreted(self) -> dict[str, Any]:
        constraints: dict[str, Any] = {}
        if self.price_min is not None:
            constraints["price_min"] = self.price_min
        if self.price_max is not None:
            constraints["price_max"] = self.price_max
        if self.brands:
            constraints["brands"] = self.brands
        if self.exclude_brands:
            constraints["exclude_brands"] = self.exclude_brands
        if self.categories:
            constraints["categories"] = self.categories
        out: dict[str, Any] = {"query": self.text, "semantic_text": self.semantic, "constraints": constraints,
                               "anchor": None, "matched": self.matched}
        if self.anchor is not None:
            out["anchor"] = {"id": self.anchor.id, "title": self.anchor.title, "price": self.anchor.price,
                             "found_by": self.anchor.how}
        if self.relative_price:
            out["relative_price"] = self.relative_price
        if self.notes:
            out["notes"] = self.notes
        return out


# Words that point at an item without naming it: "the one", "my".
ANCHOR_FILLER = {"the", "a", "an", "one", "my", "that", "this", "your", "their", "same"}

# Finds an item whose title matches a phrase: (id, title, price) or None.
AnchorLookup = Callable[[str], "Anchor | None"]


def _in_word(char: str) -> bool:
    """Whether ``char`` continues a name ("Avery" is not a name in "Averyville")."""
    return char.isalnum() or char in "_-"


_UNIT_WORDS = {w: n for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS_WORDS = {w: 10 * n for n, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_CURRENCY_WORDS = {"dollar", "dollars", "bucks", "usd"}
_RANGE_WORDS = {"and", "to"}  # "between ten and twenty dollars", "ten to twenty dollars"
_NUMBER_WORDS = {*_UNIT_WORDS, *_TENS_WORDS, "hundred", "thousand", "a", "and"}  # what a worded amount may hold


def _worded_number(words: list[str]) -> int | None:
    """["twenty", "five"] -> 25, ["a", "hundred", "and", "fifty"] -> 150; None if not one number."""
    total = current = 0
    previous = None
    for n, word in enumerate(words):
        # Each word must fit where it stands: "one hundred two hundred" is two numbers, not one.
        if word in _UNIT_WORDS and (current % 100 == 0 or (current % 100 >= 20 and current % 10 == 0)):
            current += _UNIT_WORDS[word]
        elif word in _TENS_WORDS and current % 100 == 0:
            current += _TENS_WORDS[word]
        elif word == "hundred" and current < 100:
            current = max(current, 1) * 100
        elif word == "thousand" and total == 0 and current < 1000:
            total, current = max(current, 1) * 1000, 0
        elif word == "a" and n == 0 and len(words) > 1 and words[1] in ("hundred", "thousand"):
            current = 1
        elif not (word == "and" and previous in ("hundred", "thousand") and n + 1 < len(words)):
            return None
        previous = word
    return total + current if words else None


def _digits_for_words(text: str) -> str:
    """Amounts written in words before a currency word, in digits: "under fifty dollars" -> "under
    50 dollars", "between ten and twenty bucks" -> "between 10 and 20 bucks". Nowhere else: "the one
    I bought" keeps its "one"."""
    tokens = list(re.finditer(r"[A-Za-z]+", text))
    words = [t.group(0).lower() for t in tokens]
    spans: list[tuple[int, int, int]] = []  # (start, end, value) to write in digits

    def number_before(end: int) -> tuple[int, int] | None:
        """The longest number ending at token ``end - 1``: (first token, value)."""
        first = end
        while first > 0 and words[first - 1] in _NUMBER_WORDS and (
                first == end or re.fullmatch(r"[\s-]+", text[tokens[first - 1].end():tokens[first].start()])):
            first -= 1
        for start in range(first, end):
            value = _worded_number(words[start:end])
            if value is not None:
                return start, value
        return None

    for i, word in enumerate(words):
        found = number_before(i) if word in _CURRENCY_WORDS else None
        if found is None:
            continue
        start, value = found
        spans.append((tokens[start].start(), tokens[i - 1].end(), value))
        joined_by = words[start - 1] if start >= 2 else None
        low = number_before(start - 1) if joined_by in _RANGE_WORDS else None
        # "and" joins a range only after "between" ("buy one and two dollars" is no range).
        if low is not None and (joined_by == "to" or (low[0] > 0 and words[low[0] - 1] == "between")):
            low_value, high = low[1], words[start:i]
            scale = next((w for w in high if w in ("hundred", "thousand")), None)
            if scale is not None:  # "between two and three hundred": the low end is counted in hundreds too
                factor = _worded_number(high[:high.index(scale)]) or 1
                if low_value < factor:
                    low_value *= 100 if scale == "hundred" else 1000
            spans.append((tokens[low[0]].start(), tokens[start - 2].end(), low_value))
    for begin, end, value in sorted(spans, reverse=True):
        text = text[:begin] + str(value) + text[end:]
    return text


def _amount(text: str) -> float:
    """A matched number: "1,500" -> 1500.0, "15,99" -> 15.99."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        return float(text.replace(",", ""))
    return float(text.replace(",", "."))


class QueryParser:
    """Deterministic parser; see the module docstring. ``find_anchor(phrase)`` resolves "like X";
    ``last_item(user_id)`` resolves "the one I bought"."""

    def __init__(self, facets: Facets, find_anchor: AnchorLookup | None = None,
                 last_item: Callable[[str], Anchor | None] | None = None,
                 suggest: Callable[[str, list[str], list[str]], dict[str, Any]] | None = None):
        self.facets = facets
        self.find_anchor = find_anchor
        self.last_item = last_item
        # An optional model's constraints, (query, candidate brands, candidate categories) -> dict;
        # used only where the rules found nothing, and only what the catalogue's facets confirm.
        self.suggest = suggest
        # Longest names first, so "office chairs" wins over "chairs".
        self._category_names = sorted(facets.categories, key=len, reverse=True)
        self._brand_names = sorted(facets.brands, key=len, reverse=True)
        self._brands_by_initial: dict[str, list[str]] = {}  # longest first, as ``_brand_names``
        for key in self._brand_names:
            self._brands_by_initial.setdefault(key[:1], []).append(key)
        self._plain: dict[str, bool] = {}  # brand -> whether the titles also write it as a plain word

    def parse(self, text: str, user_id: str | None = None) -> ParsedQuery:
        q = ParsedQuery(text=text, semantic=text)
        work = " " + _digits_for_words(text.strip()) + " "
        work = self._prices(q, work)
        for amount in re.findall(_FOREIGN_AMOUNT, work, flags=re.IGNORECASE):
            q.notes.append(f"'{amount.strip()}': prices are read in dollars ($15, 15 dollars); this amount was not "
                           "applied")
        work = self._brands(q, work)
        work = self._anchor(q, work, user_id)
        self._bare_brands(q, work)  # after the anchor: a brand inside "like <title>" is not a constraint
        work = self._categories(q, work)
        q.semantic = self._clean(work)
        if self.suggest is not None:
            self._add_suggestions(q, text)
        if q.anchor is not None and q.relative_price:
            if q.anchor.price is None:
                q.notes.append(f"the anchor item {q.anchor.id} has no price: '{q.relative_price}' was not enforced")
            elif q.relative_price == "cheaper":
                q.price_max = min(q.price_max if q.price_max is not None else float("inf"),
                                  round(q.anchor.price - 0.01, 2))
            else:
                q.price_min = max(q.price_min or 0.0, round(q.anchor.price + 0.01, 2))
        if q.price_min is not None and q.price_max is not None and q.price_min > q.price_max:
            # Both were asked for ("cheaper than X" and "over $25"): nothing can match, and saying so
            # is honest where swapping would return what was ruled out.
            q.notes.append(f"no price is at least {q.price_min} and at most {q.price_max}: nothing matches both")
        return q

    # -- pieces ---------------------------------------------------------------------------------

    def _add_suggestions(self, q: ParsedQuery, text: str) -> None:
        """Fill what the rules left empty from the model, validated: prices must be numbers >= 0,
        brands and categories must be the catalogue's own (its spelling is used)."""
        lowered = set(words(text))
        # Only names sharing a word with the query go into the prompt: a catalogue has thousands.
        brands = [b for k, b in self.facets.brands.items() if set(words(k)) & lowered][:50]
        categories = [c for k, c in self.facets.categories.items() if set(words(k)) & lowered][:50]
        try:
            raw = self.suggest(text, brands, categories)
        except Exception as err:  # a model is optional: its failure must not fail the request
            q.notes.append(f"language-model parser unavailable ({err}); rules only")
            return
        added = []
        for key in ("price_min", "price_max"):
            value = raw.get(key)
            if getattr(q, key) is None and value is not None:
                if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e9:
                    setattr(q, key, float(value))
                    added.append(f"{key}={value}")
                else:
                    q.notes.append(f"model suggested {key}={value!r}: not a price, ignored")
        for key, known in (("brands", self.facets.brands), ("exclude_brands", self.facets.brands),
                           ("categories", self.facets.categories)):
            values = raw.get(key) or []
            if getattr(q, key) or not isinstance(values, list):
                continue
            for value in values:
                name = known.get(str(value).lower())
                if name is None:
                    q.notes.append(f"model suggested {key} {value!r}, unknown to the catalogue: ignored")
                else:
                    getattr(q, key).append(name)
                    added.append(f"{key}={name}")
        if added:
            q.notes.append("added by the language-model parser: " + ", ".join(added))

    def _is_quantity(self, work: str, end: int) -> bool:
        """A bare number followed by a noun counts things ("3 rings", "500 sheets"); a price cue
        with a currency word never gets here."""
        after = words(work[end:end + 24])
        if not after:
            return False
        return after[0] in _UNITS or (after[0].isalpha() and after[0] not in _CONNECTIVES)

    def _prices(self, q: ParsedQuery, work: str) -> str:
        patterns = [
            ("max", rf"(?<![\w.]){_AMOUNT}\s+or\s+(?:less|under|below|cheaper)\b"),
            ("min", rf"(?<![\w.]){_AMOUNT}\s+or\s+(?:more|over|above)\b"),
            ("range", rf"\b(?:between|from)\s+{_AMOUNT}\s*(?:and|to|-)\s*{_AMOUNT}"),
            ("range", rf"(?<![\w.]){_CUR_PRE}\s*{_NUM}\s*(?:-|to)\s*{_CUR_PRE}?\s*{_NUM}\b"),
            ("range", rf"\b{_NUM}\s*(?:-|to)\s*{_NUM}{_CUR_POST}"),
            ("max", rf"(?:\bfor\s+)?\b{_MAX_CUES}\s*{_AMOUNT}"),
            ("min", rf"\b{_MIN_CUES}\s*{_AMOUNT}"),
            ("around", rf"\b(?:around|about|roughly|approximately|~)\s*(?:{_CUR_PRE}\s*{_NUM}|{_NUM}{_CUR_POST})"),
        ]
        for kind, pattern in patterns:
            for m in list(re.finditer(pattern, work, flags=re.IGNORECASE)):
                phrase = m.group(0)
                has_currency = bool(re.search(rf"{_CUR_PRE}|{_CUR_POST}", phrase, flags=re.IGNORECASE))
                if not has_currency and self._is_quantity(work, m.end()):
                    continue  # "over 100 sheets", "under 2 pounds"
                if not has_currency and words(phrase)[0] in _NAME_LIKE_CUES:
                    continue  # "the Keychron Max 196": a name, not a ceiling
                values = [_amount(g) for g in m.groups() if g]
                if kind == "range" and len(values) >= 2:
                    q.price_min, q.price_max = min(values[0], values[1]), max(values[0], values[1])
                elif kind == "max" and values:
                    q.price_max = values[0]
                elif kind == "min" and values:
                    q.price_min = values[0]
                elif kind == "around" and values:
                    q.price_min, q.price_max = round(values[0] * 0.8, 2), round(values[0] * 1.2, 2)
                else:
                    continue
                q.matched.append(phrase.strip())
                work = work.replace(phrase, " ", 1)
        return work

    def _brands(self, q: ParsedQuery, work: str) -> str:
        """Brands after a cue, and the whole list a cue starts: "not from Sony, Bose or Jabra"
        excludes all three, "by Pilot or Lamy" asks for either. Exclusion first: "not from Avery"
        must not read as "from Avery"."""
        lowered = work.lower()
        if not any(key in lowered for key in self._brand_names):  # cheap test before the regexes
            return work
        for cues, into in ((_EXCLUDE_CUES, q.exclude_brands), (_INCLUDE_CUES, q.brands)):
            for cue in list(re.finditer(rf"\b{cues}\s+(?:the\s+)?(?:brands?\s+)?", work, flags=re.IGNORECASE)):
                names, end = self._brand_list(lowered, cue.end())
                if names:
                    into.extend(name for name in dict.fromkeys(names) if name not in into)
                    q.matched.append(work[cue.start():end].strip())
                    blank = " " * (end - cue.start())  # positions kept
                    work, lowered = work[:cue.start()] + blank + work[end:], lowered[:cue.start()] + blank + lowered[end:]
        for key in self._brand_names:  # "Avery brand"
            at = lowered.find(key + " brand")
            found = self._brand_at(lowered, at) if at >= 0 and (at == 0 or not _in_word(lowered[at - 1])) else None
            if found is not None and found[0] not in q.brands:
                q.brands.append(found[0])
                q.matched.append(work[at:found[1]].strip())
                blank = " " * (found[1] - at)
                work, lowered = work[:at] + blank + work[found[1]:], lowered[:at] + blank + lowered[found[1]:]
        return work

    def _brand_at(self, lowered: str, at: int) -> tuple[str, int] | None:
        """The catalogue's brand (longest first) that ``lowered`` spells at ``at``, with an optional
        " brand" after it, and where it ends; None where no brand starts there."""
        for key in self._brands_by_initial.get(lowered[at:at + 1], ()):
            end = at + len(key)
            if lowered.startswith(key, at) and not (end < len(lowered) and _in_word(lowered[end])):
                if lowered.startswith(" brand", end) and not (end + 6 < len(lowered) and _in_word(lowered[end + 6])):
                    end += 6
                return self.facets.brands[key], end
        return None

    def _brand_list(self, lowered: str, at: int) -> tuple[list[str], int]:
        """The catalogue's brands named one after another from ``at`` ("sony, bose or jabra"), and
        where the list ends; none if no brand starts there."""
        found = self._brand_at(lowered, at)
        if found is None:
            return [], at
        names, end = [found[0]], found[1]
        while (sep := _LIST_SEPARATOR.match(lowered, end)) is not None:
            found = self._brand_at(lowered, sep.end())
            if found is None:  # the separator belongs to the list only if another brand follows it
                break
            names.append(found[0])
            end = found[1]
        return names, end

    def _is_plain_word(self, key: str) -> bool:
        """Whether the catalogue's titles write the brand ``key`` as an ordinary lower-case word."""
        if key not in self._plain:
            pattern = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
            self._plain[key] = any(key in title and pattern.search(title) for title in self.facets.titles)
        return self._plain[key]

    def _bare_brands(self, q: ParsedQuery, work: str) -> None:
        """A brand written as the catalogue writes it (case and all): "Avery labels" is a brand
        constraint, "universal remote" is not. The name stays in the semantic text."""
        if q.brands:
            return
        first_word = re.match(r"\s*([\w'-]+)", work)
        for key in self._brand_names:
            written = self.facets.brands[key]
            if written not in work or written in q.exclude_brands or len(written) < 2 or written == written.lower() and written.isalpha():
                continue
            m = re.search(rf"(?<![\w-]){re.escape(written)}(?![\w-])", work)
            if m is None:
                continue
            if first_word is not None and m.start() == first_word.start(1) and self._is_plain_word(key):
                continue  # "Fully adjustable desk": capitalised for the sentence, and a word the catalogue uses
            q.brands.append(written)
            q.matched.append(written)

    def _anchor(self, q: ParsedQuery, work: str, user_id: str | None) -> str:
        cheaper = re.search(rf"\b{_CHEAPER}\b", work, flags=re.IGNORECASE)
        pricier = re.search(rf"\b{_PRICIER}\b", work, flags=re.IGNORECASE)
        owned = re.search(rf"\b(?:{_ANCHOR_CUES}\s+)?{_OWNED}", work, flags=re.IGNORECASE)
        if owned:
            if user_id and self.last_item is not None:
                anchor = self.last_item(user_id)
                if anchor is not None:
                    q.anchor = anchor
                    q.matched.append(owned.group(0).strip())
                    work = work.replace(owned.group(0), " ", 1)
            if q.anchor is None:
                q.notes.append(f"'{owned.group(0).strip()}' needs a user_id with a history; ignored")
                work = work.replace(owned.group(0), " ", 1)
                work = re.sub(rf"\b(?:{_CHEAPER}|{_PRICIER})\b", " ", work, flags=re.IGNORECASE)
        if q.anchor is None and self.find_anchor is not None:
            for m in re.finditer(rf"\b{_ANCHOR_CUES}\s+(?:the\s+|a\s+|an\s+|my\s+)?(.+?){_ANCHOR_STOP}", work,
                                 flags=re.IGNORECASE):
                phrase = m.group(1).strip()
                if len(words(phrase)) < 2 and not re.search(r"\d", phrase):
                    continue  # "like new", "than ever": too little to name an item
                anchor = self.find_anchor(phrase)
                if anchor is not None:
                    q.anchor = anchor
                    # Titles have commas ("stapler, black"): the rest of the title goes with the anchor.
                    title_words = set(words(anchor.title))
                    rest, consumed = work[m.end():], 0
                    for tok in re.finditer(r"[,;]?\s*([\w'&+-]+)", rest):
                        if tok.group(1).lower() not in title_words:
                            break
                        consumed = tok.end()
                    q.matched.append((m.group(0) + rest[:consumed]).strip())
                    work = work[:m.start()] + " " + rest[consumed:]
                    break
        if q.anchor is None and (cheaper or pricier):
            said = (cheaper or pricier).group(0)
            q.notes.append(f"'{said}' names no item of the catalogue to compare with: no price bound was applied")
        if q.anchor is not None:
            if cheaper:
                q.relative_price = "cheaper"
                work = re.sub(rf"\b(?:but\s+|and\s+|a\s+bit\s+|slightly\s+|much\s+)?{_CHEAPER}\b", " ", work,
                              flags=re.IGNORECASE)
            elif pricier:
                q.relative_price = "pricier"
                work = re.sub(rf"\b(?:but\s+|and\s+)?{_PRICIER}\b", " ", work, flags=re.IGNORECASE)
        return work

    def _categories(self, q: ParsedQuery, work: str) -> str:
        """The catalogue's categories the text names, longest name first (so "gel pens" wins over
        "pens"), kept in the order the text names them."""
        lowered = work.lower()
        found: list[tuple[int, str, str]] = []  # (where, category, the words matched)
        for key in self._category_names:
            forms = {key}
            if key.endswith("ies"):
                forms.add(key[:-3] + "y")
            elif key.endswith("es") and key[:-2].endswith(("s", "x", "ch", "sh")):
                forms.add(key[:-2])
            elif key.endswith("s"):
                forms.add(key[:-1])
            for form in sorted(forms, key=len, reverse=True):
                if form not in lowered:
                    continue
                m = re.search(rf"(?<![\w-]){re.escape(form)}(?![\w-])", lowered)
                if m is None:
                    continue
                # A category inside a longer, already-matched one ("chairs" in "office chairs") adds nothing.
                if any(form in c.lower() for _, c, _ in found):
                    break
                excluded = re.search(rf"\b{_EXCLUDE_CUES}\s+{re.escape(form)}\s*$", lowered[:m.end()])
                if excluded:
                    break  # "anything but pens": a category exclusion is left to semantics (not enforced)
                found.append((m.start(), self.facets.categories[key], work[m.start():m.end()].strip()))
                break  # the category's words stay in the semantic text: they describe what is wanted
        for _, category, phrase in sorted(found):
            q.categories.append(category)
            q.matched.append(phrase)
        return work

    @staticmethod
    def _clean(work: str) -> str:
        text = re.sub(r"\s+", " ", work).strip(" ,;.-")
        text = re.sub(r"\s+([,.;!?])", r"\1", text)
        tokens = text.split()
        # Dangling connectives where a constraint was cut out: "pens, but" -> "pens".
        while tokens and tokens[-1].lower().strip(",;.") in {"but", "and", "or", "with", "for", "from", "that", "which",
                                                              "priced", "costing", "at", "a", "an", "the"}:
            tokens.pop()
        text = " ".join(tokens).strip(" ,;.-")
        if not [w for w in words(text) if w not in _STOPWORDS]:
            return ""
        return text
