"""The optional language-model query parser: a prompt, and the model's JSON read defensively.
What it returns is only a suggestion; the caller validates it against the catalogue's facets."""

from __future__ import annotations

import json
import re
from typing import Any

from prompts.generators import Generator, GeneratorError
from prompts.rendering import fill, load_template

KEYS = ("price_min", "price_max", "brands", "exclude_brands", "categories")


def suggest_constraints(query: str, generator: Generator, brands: list[str], categories: list[str]) -> dict[str, Any]:
    """The model's constraints for ``query`` as a dict with ``KEYS`` (missing keys absent).
    Raises ``GeneratorError`` when the back-end fails or answers with no JSON object."""
    prompt = fill(load_template("query_parser_prompt.txt"), query=query, brands=json.dumps(brands),
                  categories=json.dumps(categories))
    text = generator.generate(prompt)
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if match is None:
        raise GeneratorError(f"no JSON object in the model's answer: {text[:80]!r}")
    try:
        raw = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise GeneratorError(f"unreadable JSON from the model: {err}") from err
    return {k: raw[k] for k in KEYS if isinstance(raw, dict) and raw.get(k) not in (None, [], "")}
