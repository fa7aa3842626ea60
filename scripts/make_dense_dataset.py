"""Write a dense synthetic interaction dataset for `hybridrec evaluate` (issue 23).

The evaluation's generic format (``retrieval/evaluation/datasets.py``, ``load_generic``): a folder
with ``items.jsonl`` (catalogue rows as ``hybridrec ingest`` reads them) and ``interactions.jsonl``
(``user_id``, ``item_id``, ``timestamp``; each user's rows in time order). Deterministic for its seed.

Shape (defaults): about 1,700 items over the demo catalogue's categories (scripts/make_demo_catalogue.py,
with the item's noun as a third, leaf category), about 950 users with about 100 interactions each
(log-normal lengths, and 5% of users with 500 to 800), popularity skewed (Zipf over items), and
sequential structure: each item has a few fixed successors, mostly in its own category, and a user's
next item is one of the last item's successors about half the time, so co-occurrence (and order)
carries signal. A user never takes an item twice.

    .venv/bin/python scripts/make_dense_dataset.py --out /tmp/dense-eval
    .venv/bin/hybridrec evaluate --dataset /tmp/dense-eval --out /tmp/dense-eval-report

Generated data is never committed: write it under /tmp.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_catalogue import CATEGORIES, make_items  # noqa: E402


def dense_items(count: int, seed: int) -> list[dict]:
    """The demo catalogue's items, with their noun as a leaf category (for stated preferences)."""
    rows = []
    for row in make_items(count, seed):
        category = row["categories"][-1]
        noun = next((n for n in CATEGORIES[category][0] if n in row["title"]), None)
        if noun:
            row["categories"] = [*row["categories"], noun[0].upper() + noun[1:]]
        row["id"] = row["id"].replace("demo-", "item-")
        rows.append(row)
    return rows


def dense_sequences(items: list[dict], users: int, mean_length: int, heavy_fraction: float,
                    seed: int) -> dict[str, list[int]]:
    """Each user's item indices, oldest first."""
    rng = np.random.default_rng(seed)
    n = len(items)
    category_of = np.array([hash_category(row["categories"][-2]) for row in items])
    by_category = {c: np.flatnonzero(category_of == c) for c in np.unique(category_of)}
    # Popularity: Zipf over a random permutation of the items.
    popularity = 1.0 / np.arange(1, n + 1) ** 0.9
    popularity = popularity[rng.permutation(n)]
    popularity /= popularity.sum()
    # Successors: four per item, three in its own category (popularity-weighted), one anywhere.
    successors = np.empty((n, 4), dtype=np.int64)
    for i in range(n):
        same = by_category[category_of[i]]
        p = popularity[same] / popularity[same].sum()
        successors[i, :3] = rng.choice(same, size=3, p=p)
        successors[i, 3] = rng.choice(n, p=popularity)
    categories = list(by_category)
    out: dict[str, list[int]] = {}
    for u in range(users):
        if rng.random() < heavy_fraction:
            length = int(rng.integers(500, 801))
        else:
            length = int(np.clip(rng.lognormal(np.log(mean_length) - 0.18, 0.6), 5, 400))
        liked = rng.choice(categories, size=3, replace=False)
        liked_items = np.concatenate([by_category[c] for c in liked])
        liked_p = popularity[liked_items] / popularity[liked_items].sum()
        taken: set[int] = set()
        seq: list[int] = []
        while len(seq) < length:
            roll = rng.random()
            if seq and roll < 0.5:
                nxt = int(successors[seq[-1], rng.integers(4)])
            elif roll < 0.8:
                nxt = int(rng.choice(liked_items, p=liked_p))
            else:
                nxt = int(rng.choice(n, p=popularity))
            if nxt in taken:
                if rng.random() < 0.5 or len(taken) >= n:
                    continue
                nxt = int(rng.choice(n, p=popularity))  # a second chance, anywhere
                if nxt in taken:
                    continue
            taken.add(nxt)
            seq.append(nxt)
        out[f"user-{u:05d}"] = seq
    return out


def hash_category(name: str) -> int:
    return sorted(CATEGORIES).index(name)


def write_dataset(out: Path, items: int = 1700, users: int = 950, mean_length: int = 100,
                  heavy_fraction: float = 0.05, seed: int = 23) -> dict[str, int]:
    """Writes ``items.jsonl`` and ``interactions.jsonl`` under ``out``; returns its counts."""
    out.mkdir(parents=True, exist_ok=True)
    rows = dense_items(items, seed)
    sequences = dense_sequences(rows, users, mean_length, heavy_fraction, seed)
    with open(out / "items.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    start = 1_700_000_000
    interactions = 0
    with open(out / "interactions.jsonl", "w", encoding="utf-8") as fh:
        for user, seq in sequences.items():
            for step, index in enumerate(seq):
                fh.write(json.dumps({"user_id": user, "item_id": rows[index]["id"],
                                     "timestamp": start + step * 3600}) + "\n")
            interactions += len(seq)
    lengths = sorted(len(s) for s in sequences.values())
    return {"items": len(rows), "users": len(sequences), "interactions": interactions,
            "median_length": lengths[len(lengths) // 2], "max_length": lengths[-1],
            "users_500_plus": sum(n >= 500 for n in lengths)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder (under /tmp)")
    parser.add_argument("--items", type=int, default=1700)
    parser.add_argument("--users", type=int, default=950)
    parser.add_argument("--mean-length", type=int, default=100)
    parser.add_argument("--heavy-fraction", type=float, default=0.05, help="users with 500 to 800 interactions")
    parser.add_argument("--seed", type=int, default=23)
    args = parser.parse_args(argv)
    stats = write_dataset(args.out, args.items, args.users, args.mean_length, args.heavy_fraction, args.seed)
    print(json.dumps({"out": str(args.out), **stats}))


if __name__ == "__main__":
    main()
