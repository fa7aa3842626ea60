"""Published sequential recommenders beside hybridrec, in the same run (issue 23: "Peers in the same run").

Trains RecBole's SASRec and GRU4Rec (``retrieval.evaluation.peers``; ``pip install -e '.[peers]'``)
on the training part of the split (what the stage trainers see) and ranks the whole catalogue for
the same evaluated users as ``hybridrec evaluate``. ``hybrid_retrieval`` and the baselines are
measured in the same run by ``retrieval.evaluation.replay.evaluate`` with the same config, so every
row of a slice covers the same users, and each row's NDCG@10 is compared with hybrid_retrieval's
user by user (``paired_change``).

    python benchmarks/peers.py [--dataset DIR] [--max-users 500] [--seed 42] [--split test]
        [--peers sasrec,gru4rec] [--epochs 8] [--out benchmarks/results/peers.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import OUT, SHARED_DATASET, table  # noqa: E402

REFERENCE = "hybrid_retrieval"
METHODS = ("popularity", "itemknn", "bm25", "zero_shot", REFERENCE)
COLUMNS = ("ndcg@10", "recall@10", "ndcg@50", "recall@50")


def rows_for(slice_name: str, methods: dict, ranks: dict) -> list[list]:
    from retrieval.evaluation.replay import paired_change

    reference = methods.get(REFERENCE, {})
    rows = []
    for method, m in methods.items():
        if not m.get("users"):
            continue
        ratio = m["ndcg@10"] / reference["ndcg@10"] if reference.get("ndcg@10") else float("nan")
        change = ""
        if method != REFERENCE and REFERENCE in ranks:
            c = paired_change(ranks[method], ranks[REFERENCE])
            change = f"{c['ndcg@10']:+.4f} ± {c['standard_error']:.4f}"
        rows.append([method, m["users"], *(round(m[c], 4) for c in COLUMNS), round(ratio, 3), change])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SHARED_DATASET)
    parser.add_argument("--max-users", type=int, default=500, help="a seeded sample of users (0: every user)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", choices=["test", "valid"], default="test")
    parser.add_argument("--peers", default="sasrec,gru4rec", help="comma-separated: sasrec, gru4rec")
    parser.add_argument("--epochs", type=int, help="each peer's epoch cap (default: PeerSettings.epochs)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"hybridrec's methods measured beside them (default: {' '.join(METHODS)})")
    parser.add_argument("--out", type=Path, default=OUT / "peers.json")
    args = parser.parse_args(argv)
    if not args.dataset.exists():
        print(f"skipping: {args.dataset} is not here")
        return 0

    from encoders import BiEncoder
    from retrieval.evaluation.datasets import load_dataset
    from retrieval.evaluation.peers import PeerSettings, evaluate_peers, require_recbole
    from retrieval.evaluation.replay import EvalConfig, encode_catalogue, evaluate

    require_recbole()  # fail before the long part when the extra is missing
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    config = EvalConfig(seed=args.seed, split=args.split, max_users=args.max_users or None,
                        methods=tuple(args.methods))
    encoder = BiEncoder()
    points = encode_catalogue(dataset, encoder)
    ours = evaluate(dataset, encoder, config, points=points)
    settings = PeerSettings(**({"epochs": args.epochs} if args.epochs else {}))
    peers = evaluate_peers(dataset, config, peers=tuple(p.strip() for p in args.peers.split(",") if p.strip()),
                           settings=settings, points=points)
    seconds = time.perf_counter() - started

    slices, report = {}, []
    for s, methods in ours["slices"].items():
        merged = {**methods, **peers["slices"].get(s, {})}
        ranks = {**ours["ranks"][s], **peers["ranks"].get(s, {})}
        rows = rows_for(s, merged, ranks)
        note = peers["notes"].get(s)
        report.append(table(["method", "users", *(c.replace("ndcg", "NDCG").replace("recall", "Recall") for c in COLUMNS),
                             f"NDCG@10 / {REFERENCE}", f"paired change vs {REFERENCE}"], rows,
                            title=f"{s}" + (f" (peers: {note})" if note else "")))
        slices[s] = {m: {k: v for k, v in r.items() if k != "recall_curve"} for m, r in merged.items()}
        for m in peers["slices"].get(s, {}):
            slices[s][m]["fallback_users"] = peers["fallback_users"][s][m]
        for row in rows:
            if row[-1]:
                slices[s][row[0]]["paired_change_vs_" + REFERENCE] = row[-1]
    print()
    print("\n\n".join(report))
    training = [[m, p["model"], p["epochs_run"], p["best_epoch"], p["options"]["epochs"], round(p["best_valid_score"], 4),
                 round(p["seconds"])] for m, p in peers["peers"].items()]
    print()
    print(table(["peer", "RecBole model", "epochs run", "best epoch", "epoch cap", "valid NDCG@10", "train s"],
                training, title=f"training ({peers['peers'][next(iter(peers['peers']))]['package']}, CPU)"))
    payload = {
        "benchmark": "peers", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "dataset": ours["dataset"], "config": {**peers["config"], "methods": list(config.methods)},
        "reference": REFERENCE, "slices": slices, "peers": peers["peers"], "peer_settings": peers["settings"],
        "notes": peers["notes"], "seconds": {"total": seconds, "hybridrec_evaluate": ours["seconds"],
                                             "peers": peers["seconds"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
