"""Evidence -> text: the deterministic template text, the language-model prompt, and the guarded
path that falls back to the template whenever a model's text says more than the evidence."""

from __future__ import annotations

import json
import time
from typing import Any

from prompts.generators import Generator, GeneratorError
from prompts.guard import check_grounded
from prompts.rendering import fill, load_lines, load_template


def _num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "?"
    return f"{x:.{digits}f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def _score(x: float | None) -> str:
    """A score with its significant digits: a ranker's probabilities can be far below 0.0001."""
    if x is None or x == 0 or abs(x) >= 0.001:
        return _num(x, 4)
    return f"{x:.2g}"


def render_template_text(evidence: dict[str, Any]) -> str:
    """The deterministic explanation: one sentence per piece of evidence, strongest first."""
    t = load_lines("explanation.txt")
    item = evidence["item"]
    parts: list[str] = []
    query = evidence.get("query") or {}
    for c in query.get("constraints", []):
        kind = c["kind"]
        if kind in ("price_max", "price_min"):
            parts.append(fill(t[kind], price=_num(c["price"]), limit=_num(c["limit"])))
        elif kind == "brand":
            parts.append(fill(t["brand"], brand=c["brand"]))
        elif kind == "exclude_brand":
            parts.append(fill(t["exclude_brand"], brands=", ".join(c["brands"])))
        elif kind == "category":
            parts.append(fill(t["category"], category=c["category"]))
    if query.get("anchor"):
        a = query["anchor"]
        parts.append(fill(t["anchor"], anchor_title=a["title"], similarity=_num(a["similarity"])))
    if query.get("matched_words"):
        parts.append(fill(t["query_words"], words=", ".join(query["matched_words"])))
    for h in evidence.get("history", [])[:2]:
        parts.append(fill(t["history"], history_title=h["title"], similarity=_num(h["similarity"]),
                          weight=_num(h["weight"]), contribution=_num(h["contribution"], 3)))
    for c in evidence.get("collaborative", [])[:1]:
        parts.append(fill(t["collaborative"], shared_users=c["shared_users"], history_title=c["title"]))
    sequence = (evidence.get("sources") or {}).get("sequence")
    if sequence:
        parts.append(fill(t["sequence"], rank=sequence["rank"]))
    if evidence.get("preferences"):
        parts.append(t["preferences"])
    interest = evidence.get("interest")
    for a in (interest or {}).get("audiences", [])[:1]:
        parts.append(fill(t["interest"], category=a["category"], people=a["people"], percent=_num(a["percent"], 1),
                          everyone_percent=_num(interest["everyone_percent"], 1)))
    if evidence.get("popular") and not parts:
        parts.append(t["popular"])
    if evidence.get("reranker"):
        r = evidence["reranker"]
        parts.append(fill(t["reranker_kept" if r.get("kept_place") else "reranker"], model=r["model"],
                          retrieval_rank=r["retrieval_rank"], rank=r["rank"], candidates=r["candidates"]))
        for key, sign in (("reranker_drivers", 1), ("reranker_held_back", -1)):
            named = [f"{t['driver_' + d['evidence']]} ({d['effect']:+.4f})" for d in r.get("drivers", [])
                     if d["effect"] * sign > 0 and "driver_" + d["evidence"] in t]
            if named:
                parts.append(fill(t[key], drivers=", ".join(named)))
    if evidence.get("diversity") and evidence["diversity"]["moved"]:
        moved = evidence["diversity"]["moved"]
        parts.append(fill(t["diversity"], direction="up" if moved > 0 else "down", moved=abs(moved)))
    cf = evidence.get("counterfactual")
    if cf:
        parts.append(fill(t["counterfactual"], without_title=cf["without_title"],
                          score_before=_score(cf["score_before"]), score_after=_score(cf["score_after"]),
                          rank_before=cf["rank_before"] or "-", rank_after=cf["rank_after"] or "-"))
    if evidence.get("rank") is None:
        parts.append(fill(t["not_in_list"], k=evidence.get("k", 100)))
    head = fill(t["headline"], title=item["title"])
    return head + " " + "; ".join(p.rstrip(".") for p in parts) + "." if parts else head.rstrip(":") + "."


def build_prompt(evidence: dict[str, Any]) -> str:
    """The language-model prompt: the evidence as JSON inside a data block."""
    return fill(load_template("explanation_prompt.txt"), evidence_json=json.dumps(evidence, indent=1))


def explain_text(evidence: dict[str, Any], generator: Generator, vocabulary: dict[str, list[str]]) -> dict[str, Any]:
    """``{"text", "generator", "guard": {"fired", "violations"}, "template_text", "ms"}``: the
    generator's text if the guard passes it, else the template text (and the guard says so)."""
    started = time.perf_counter()
    template_text = render_template_text(evidence)
    out: dict[str, Any] = {"generator": generator.name, "template_text": template_text}
    if generator.name == "template":
        out.update(text=template_text, guard={"fired": False, "violations": []})
    else:
        try:
            generated = generator.generate(build_prompt(evidence)).strip()
        except GeneratorError as err:
            out.update(text=template_text, guard={"fired": True, "violations": [f"generator failed: {err}"]})
        else:
            verdict = check_grounded(generated, evidence, vocabulary)
            out["generated_text"] = generated
            if verdict.ok and generated:
                out.update(text=generated, guard={"fired": False, "violations": []})
            else:
                out.update(text=template_text, guard={"fired": True, "violations": verdict.violations or ["empty"]})
    out["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return out
