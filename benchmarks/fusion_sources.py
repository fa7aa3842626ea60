"""Does the fusion beat each of its own sources on every slice? The served pipeline
(``hybrid_retrieval``, zero-shot) against each candidate source serving alone, paired user by user,
on every slice of the evaluation, on every user of a split by default (at 500 users the paired
errors are as large as the differences).

A source is "ahead" on a slice when it beats the fusion by more than ``--margin`` standard errors
of the paired difference (the trainers' ``clearly_better``); "level" otherwise.

    python benchmarks/fusion_sources.py [--split valid|test] [--max-users N] [--seed 42] [--name NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATASET, save, table  # noqa: E402
from encoders import BiEncoder  # noqa: E402
from retrieval.evaluation import metrics  # noqa: E402
from retrieval.evaluation.datasets import load_dataset  # noqa: E402
from retrieval.evaluation.replay import INTEREST, SLICES, EvalConfig, encode_catalogue, evaluate, paired_change  # noqa: E402
from retrieval.pipeline.config import RecommendConfig  # noqa: E402
from retrieval.training.protocol import clearly_better  # noqa: E402

FUSION = "hybrid_retrieval"
# Each source of the zero-shot fusion as an evaluation method (the sequence source serves only
# when a trained model is loaded: benchmarks/sequence_encoder.py measures it).
SOURCES = {"dense_profile": "dense_profile", "collaborative": "collaborative_seq", "lexical": "bm25",
           "popular": "popularity", "interest": INTEREST}
# A source that answers one request type only, compared on its slice only (elsewhere it would be
# the popularity fallback under its name).
ONLY_ON = {"interest": "cold_users_prefs"}


def compare(result: dict, margin: float) -> dict[str, dict]:
    """Per slice: the fusion, each source alone, and fusion minus source paired, with a verdict."""
    out = {}
    for s in SLICES:
        if s not in result["slices"]:
            continue
        fused = result["ranks"][s][FUSION]
        fused_cases = [metrics.ndcg_at(r, 10) for r in fused]
        row = {"users": result["slices"][s][FUSION]["users"], "fusion": result["slices"][s][FUSION]["ndcg@10"],
               "sources": {}}
        for source, method in SOURCES.items():
            if ONLY_ON.get(source, s) != s:
                continue
            change = paired_change(fused, result["ranks"][s][method])
            source_cases = [metrics.ndcg_at(r, 10) for r in result["ranks"][s][method]]
            verdict = ("source ahead" if clearly_better(source_cases, fused_cases, margin)[0]
                       else "fusion ahead" if clearly_better(fused_cases, source_cases, margin)[0] else "level")
            row["sources"][source] = {"ndcg@10": result["slices"][s][method]["ndcg@10"],
                                      "fusion_minus_source": change, "verdict": verdict}
        out[s] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--split", default="valid", choices=["test", "valid"])
    parser.add_argument("--max-users", type=int, default=0, help="0: every user of the split")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--margin", type=float, default=1.0, help="standard errors a difference must pass")
    parser.add_argument("--name", default=None, help="results file (default fusion_sources_SPLIT)")
    args = parser.parse_args(argv)
    if not args.dataset.exists():
        print(f"skipping: {args.dataset} is not here")
        return 0
    dataset = load_dataset(args.dataset)
    encoder = BiEncoder()
    points = encode_catalogue(dataset, encoder)
    config = EvalConfig(seed=args.seed, split=args.split, max_users=args.max_users or None,
                        methods=(FUSION, *SOURCES.values()), recommend=RecommendConfig())
    result = evaluate(dataset, encoder, config, points=points)
    slices = compare(result, args.margin)

    rows = []
    for s, row in slices.items():
        cells = [s, row["users"], round(row["fusion"], 4)]
        for source in SOURCES:
            c = row["sources"].get(source)
            if c is None:
                cells.append("")
                continue
            d = c["fusion_minus_source"]
            cells.append(f"{c['ndcg@10']:.4f} ({d['ndcg@10']:+.4f} ± {d['standard_error']:.4f})"
                         + (" **ahead**" if c["verdict"] == "source ahead" else ""))
        rows.append(cells)
    print(table(["slice", "users", "fusion", *(f"{s} alone (fusion minus it)" for s in SOURCES)], rows,
                title=f"NDCG@10, {args.split}, {result['config']['evaluated_users']} users, seed {args.seed}"))
    behind = [(s, src) for s, row in slices.items() for src, c in row["sources"].items() if c["verdict"] == "source ahead"]
    print("fusion ahead of or level with every source on every slice" if not behind else
          "a source is ahead of the fusion on: " + ", ".join(f"{s} ({src})" for s, src in behind))
    path = save(args.name or f"fusion_sources_{args.split}",
                {"config": {**vars(args), "dataset": str(args.dataset), "evaluated_users": result["config"]["evaluated_users"]},
                 "slices": slices, "seconds": result["seconds"]})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
