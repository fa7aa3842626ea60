"""Evidence for "why is this item here": read off the actual scoring, never invented.

For one (request, item) the pipeline runs as it would for the request, and the evidence is what
drove the item's score: which sources ranked it and where, the history items that pull the
profile toward it (position weight x cosine similarity, the same decay the profile uses), how
many people had both, which query constraints and words it matches, the reranker's verdict, and
whether diversity moved it. A counterfactual re-runs the pipeline without the top history item
and reports how far the item's score falls.

Example::

    evidence = Explainer(engine.recommender).evidence(RecommendRequest(user_id="u1"), "sku-9")
    evidence["history"][0]["contribution"], evidence["counterfactual"]["score_after"]
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import numpy as np

from retrieval.limits import MAX_K
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import ItemTrace, RecommendRequest, ReplayOptions
from retrieval.pipeline.sources import InterestSource
from retrieval.state.facets import words

# An audience share stated for fewer people than this would come close to saying what one person took.
SMALLEST_STATED_AUDIENCE = 10

# Sources whose candidates come from the history: the profile vector and the sequence encoder
# (BM25 reads the history's titles where a request has no query).
HISTORY_SOURCES = {"dense_profile", "sequence"}

_FILLER = {"a", "an", "the", "for", "with", "and", "or", "of", "to", "in", "on", "my", "me", "i", "that", "is", "it"}


class UnknownItem(KeyError):
    pass


class Explainer:
    """Builds the evidence dict that ``prompts.explain_text`` turns into words."""

    def __init__(self, recommender: Recommender, top_history: int = 3):
        self.recommender = recommender
        self.top_history = top_history

    def _rank_of(self, understood: RecommendRequest, item_id: str, without: tuple[str, ...] = ()
                 ) -> tuple[int | None, float | None, ItemTrace | None]:
        """The item's rank, score and trace in the pipeline's answer to an already-understood request
        (``without``: as if these history items had never been seen). The rank is the one in the
        request's own list (its ``k`` sizes the candidate pool and the diversity step, so a longer
        list orders differently); an item outside it has no rank, and its score and trace come from
        a list of ``MAX_K``."""
        for k in dict.fromkeys((understood.k, MAX_K)):
            result = self.recommender.recommend(replace(understood, k=k, understand_query=False),
                                                ReplayOptions(without_items=without))
            for n, item in enumerate(result.items, start=1):
                if item.id == item_id:
                    return (n if k == understood.k else None), item.score, item.trace
        return None, None, None

    def evidence(self, req: RecommendRequest, item_id: str, counterfactual: bool = True,
                 result_trace: ItemTrace | None = None, rank: int | None = None,
                 understood: tuple[RecommendRequest, Any] | None = None) -> dict[str, Any]:
        """``result_trace``/``rank``: the item's trace from a recommendation already computed (the
        ``explain: true`` path), so the pipeline is not run again for it; ``understood``: the
        request as ``Recommender.understand`` returned it, so a query is parsed once per request."""
        rec = self.recommender
        point = rec.catalogue.get(item_id, with_vector=True)
        if point is None:
            raise UnknownItem(item_id)
        p = point.payload
        understood_req, parsed = understood or rec.understand(req)
        score = None
        if result_trace is None:
            rank, score, result_trace = self._rank_of(understood_req, item_id)
        ev: dict[str, Any] = {
            "item": {"id": item_id, "title": p.get("title", ""), "brand": p.get("brand"),
                     "categories": p.get("categories") or [], "price": p.get("price")},
            "rank": rank, "k": understood_req.k if rank is None else None,
            "score": round(score, 6) if score is not None else None,
            "sources": {}, "history": [], "collaborative": [], "query": None,
            "preferences": False, "interest": None, "popular": None, "reranker": None, "diversity": None, "counterfactual": None,
        }
        trace = result_trace or ItemTrace({}, [])
        ev["sources"] = msgspec.to_builtins(trace.sources)
        if "popular" in ev["sources"]:
            ev["popular"] = ev["sources"]["popular"]
        if trace.rerank is not None and rec.reranker is not None:
            ranked = msgspec.to_builtins(trace.rerank)
            ev["reranker"] = {"version": rec.reranker.version, "model": rec.reranker.description,
                              "rank": ranked["rank"], "retrieval_rank": ranked["retrieval_rank"],
                              "kept_place": ranked["kept_place"], "score": ranked["score"],
                              "candidates": max(req.k, rec.config.rerank_candidates),
                              "drivers": ranked["drivers"]}
        if trace.diversity is not None:
            ev["diversity"] = msgspec.to_builtins(trace.diversity)

        # History: what pulls the profile toward this item, with the profile's own weights (event
        # type x time decay x position decay, as shares of its positive mass), only where a source
        # that reads the history ranked the item; people who took both, only where the collaborative
        # source did. The anchor of a query is reported with the query.
        events = rec.profiles.log.user_events(req.user_id, limit=rec.profiles.config.max_events) if req.user_id else []
        weights = rec.profiles.item_weights(events, extra_items=list(understood_req.history))
        anchor_id = parsed.anchor.id if parsed is not None and parsed.anchor is not None else None
        weights = {i: wv for i, wv in weights.items() if i not in (item_id, anchor_id)}
        read_history = bool(HISTORY_SOURCES & set(ev["sources"])) or ("lexical" in ev["sources"] and not understood_req.query)
        collaborative = "collaborative" in ev["sources"]
        if weights and (read_history or collaborative):
            payloads = rec.catalogue.get_many(list(weights))
            target = point.vector / max(float(np.linalg.norm(point.vector)), 1e-9)
            rows = []
            for h, (w, vector) in weights.items():
                sim = float(vector @ target / max(float(np.linalg.norm(vector)), 1e-9))
                rows.append({"id": h, "title": payloads[h].payload.get("title", "") if h in payloads else h,
                             "weight": round(w, 3), "similarity": round(sim, 3), "contribution": round(w * sim, 4)})
            rows.sort(key=lambda r: -r["contribution"])
            ev["history"] = rows[: self.top_history] if read_history else []
            if collaborative:
                heaviest = sorted(weights, key=lambda h: -weights[h][0])[:20]
                shared = [(h, rec.profiles.index.shared_users(h, item_id)) for h in heaviest]
                shared = sorted([s for s in shared if s[1] > 0], key=lambda s: -s[1])[:2]
                ev["collaborative"] = [{"id": h, "title": payloads[h].payload.get("title", h) if h in payloads else h,
                                        "shared_users": n} for h, n in shared]

        if req.query:
            ev["query"] = self._query_evidence(req.query, parsed, p, point.vector)
        if req.user_id:
            stated = rec.profiles.log.preferences(req.user_id)
            ev["preferences"] = bool(stated is not None and stated.preferences and "dense_profile" in ev["sources"])
            if stated is not None and stated.preferences and "interest" in ev["sources"]:
                ev["interest"] = self._interest_evidence(stated.preferences, item_id, ev["sources"]["interest"])

        if counterfactual and ev["history"] and len(weights) > 1:
            if score is None:  # explain: true passes a trace; the counterfactual needs the score too
                rank, score, _ = self._rank_of(understood_req, item_id)
            ev["counterfactual"] = self._without(understood_req, ev["history"][0], item_id, rank, score)
        return ev

    def _interest_evidence(self, preferences: str, item_id: str, source: dict[str, Any]) -> dict[str, Any]:
        """Of the people who took each category the preferences name, the share who took the item,
        against the share of everyone (what ``InterestSource`` scored); not for fewer people than
        ``SMALLEST_STATED_AUDIENCE``."""
        index = self.recommender.profiles.index
        audiences = []
        for category in self.recommender.queries.stated_categories(preferences):
            found = index.audience_share(InterestSource.audience_key(category), item_id)
            percent = round(100 * found[0], 1) if found is not None else 0.0
            if found is not None and found[1] >= SMALLEST_STATED_AUDIENCE and percent > 0:
                audiences.append({"category": category, "people": found[1], "percent": percent})
        return {"rank": source["rank"], "audiences": audiences,
                "everyone_percent": round(100 * index.everyone_share(item_id), 1)}

    def _query_evidence(self, query: str, parsed, payload: dict, vector: np.ndarray) -> dict[str, Any]:
        text_words = set(words(" ".join([payload.get("title", ""), payload.get("description") or "",
                                         " ".join(payload.get("categories") or [])])))
        semantic = parsed.semantic if parsed is not None else query
        matched = [w for w in dict.fromkeys(words(semantic)) if w not in _FILLER and
                   (w in text_words or w.rstrip("s") in text_words or w + "s" in text_words)]
        out: dict[str, Any] = {"text": query, "matched_words": matched, "constraints": [], "anchor": None}
        if parsed is None:
            return out
        price = payload.get("price")
        if parsed.price_max is not None and price is not None:
            out["constraints"].append({"kind": "price_max", "limit": parsed.price_max, "price": price})
        if parsed.price_min is not None and price is not None:
            out["constraints"].append({"kind": "price_min", "limit": parsed.price_min, "price": price})
        if parsed.brands and payload.get("brand"):
            out["constraints"].append({"kind": "brand", "brand": payload["brand"]})
        if parsed.exclude_brands:
            out["constraints"].append({"kind": "exclude_brand", "brands": parsed.exclude_brands})
        cats = {c.lower(): c for c in payload.get("categories") or []}
        for c in parsed.categories:
            if c.lower() in cats:
                out["constraints"].append({"kind": "category", "category": cats[c.lower()]})
        if parsed.anchor is not None:
            anchor_vec = self.recommender.catalogue.vectors([parsed.anchor.id]).get(parsed.anchor.id)
            sim = float(anchor_vec @ vector / max(float(np.linalg.norm(anchor_vec) * np.linalg.norm(vector)), 1e-9)) \
                if anchor_vec is not None else None
            out["anchor"] = {"id": parsed.anchor.id, "title": parsed.anchor.title,
                             "similarity": round(sim, 3) if sim is not None else None}
        return out

    def _without(self, understood: RecommendRequest, top: dict, item_id: str, rank_before: int | None,
                 score_before: float | None) -> dict[str, Any]:
        """The same request once more, as if the top evidence item had never been seen."""
        rank_after, score_after, _ = self._rank_of(understood, item_id, without=(top["id"],))
        before, after = score_before or 0.0, score_after or 0.0
        return {"without_id": top["id"], "without_title": top["title"],
                "score_before": round(before, 6), "score_after": round(after, 6),
                "rank_before": rank_before, "rank_after": rank_after,
                "drop": round(before - after, 6),
                "drop_share": round((before - after) / before, 3) if before > 0 else None}
