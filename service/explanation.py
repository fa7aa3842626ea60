"""One explanation flow for the API and the CLI: the evidence read off the pipeline's scoring
(``retrieval.explain``), then words from the configured generator behind the guard (``prompts``)."""

from __future__ import annotations

from typing import Any

from prompts import Generator, explain_text
from retrieval.explain.evidence import Explainer
from retrieval.pipeline.recommender import Recommender
from retrieval.pipeline.request import ItemTrace, RecommendRequest


def explain_item(recommender: Recommender, generator: Generator, req: RecommendRequest, item_id: str,
                 trace: ItemTrace | None = None, rank: int | None = None, counterfactual: bool = True,
                 understood: tuple | None = None) -> dict[str, Any]:
    """``{"text", "generator", "guard", "evidence"}`` for one item. ``trace``/``rank``: the item's
    place in a ranking already computed (not run again); ``understood``: the request as
    ``Recommender.understand`` returned it, so a query is parsed once for a whole list."""
    evidence = Explainer(recommender).evidence(req, item_id, counterfactual=counterfactual, result_trace=trace,
                                               rank=rank, understood=understood)
    words = explain_text(evidence, generator, recommender.catalogue.facets().vocabulary())
    return {"text": words["text"], "generator": words["generator"], "guard": words["guard"], "evidence": evidence}
