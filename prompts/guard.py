"""The faithfulness guard: a generated explanation may name only items, brands, categories and
numbers that the evidence contains. Anything else and the caller falls back to the template."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GuardResult:
    ok: bool
    violations: list[str] = field(default_factory=list)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers(v)]
    if isinstance(value, str):
        return [float(m) for m in re.findall(r"\d+(?:\.\d+)?", value)]
    return []


def _mentions(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term.lower())}(?![\w-])", text) is not None


def check_grounded(text: str, evidence: dict[str, Any], vocabulary: dict[str, list[str]]) -> GuardResult:
    """``vocabulary``: the catalogue's ``brands``, ``categories`` and ``titles``; any of them that
    the text names must be in the evidence, and so must every number (as written or rounded;
    ranks 1-10 spelled as digits are numbers too)."""
    lowered = text.lower()
    evidence_text = json.dumps(evidence, ensure_ascii=False).lower()
    violations = []
    for kind, singular in (("brands", "brand"), ("categories", "category"), ("titles", "title")):
        for term in vocabulary.get(kind, ()):
            key = term.lower()
            # The substring test first: a catalogue has thousands of names, the regex is for the few hits.
            if len(term) > 2 and key in lowered and key not in evidence_text and _mentions(lowered, term):
                violations.append(f"names {singular} {term!r}, which is not in the evidence")
    allowed = _numbers(evidence)
    for raw in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text):
        x = float(raw)
        if not any(abs(x - a) <= max(0.005, abs(a) * 0.005) or abs(x - round(a)) < 1e-9 or abs(x - a * 100) < 0.5
                   for a in allowed):
            violations.append(f"states the number {raw}, which is not in the evidence")
    for quoted in re.findall(r"[\"“]([^\"”]{4,})[\"”]", text):
        if quoted.lower() not in evidence_text:
            violations.append(f"quotes {quoted!r}, which is not in the evidence")
    return GuardResult(not violations, violations)
