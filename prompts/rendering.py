"""Templates are files under ``prompts/templates``; this reads and fills them."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_template(name: str) -> str:
    return (resources.files("prompts") / "templates" / name).read_text(encoding="utf-8")


@cache
def load_lines(name: str) -> dict[str, str]:
    """A ``key: text`` file (``#`` starts a comment line) as a dict."""
    lines = {}
    for raw in load_template(name).splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            key, _, text = raw.partition(":")
            lines[key.strip()] = text.strip()
    return lines


def fill(template: str, **fields: object) -> str:
    """``str.format`` with the fields given; item text inside a field is never re-parsed."""
    return template.format(**fields)
