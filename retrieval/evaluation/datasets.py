"""Interaction datasets for offline evaluation: the Amazon JSON format and a generic one.

A ``Dataset`` is catalogue rows (the shape ``PUT /v1/items`` and ``hybridrec ingest`` accept) and
each user's items in chronological order.
"""

from __future__ import annotations

import csv
import html
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Dataset:
    name: str
    items: list[dict[str, Any]]
    sequences: dict[str, list[str]]  # user id -> item ids, oldest first

    def stats(self) -> dict[str, int]:
        return {"items": len(self.items), "users": len(self.sequences),
                "interactions": sum(len(s) for s in self.sequences.values())}


def _amazon_item(key: str, raw: dict[str, Any]) -> dict[str, Any]:
    categories = [c.strip() for c in html.unescape(raw.get("categories") or "").split(",") if c.strip()]
    row: dict[str, Any] = {"id": str(key), "title": html.unescape(raw.get("title") or "").strip() or f"item {key}",
                           "description": html.unescape(raw.get("description") or "").strip(),
                           "categories": categories}
    brand = html.unescape(raw.get("brand") or "").strip()
    if brand:
        row["brand"] = brand
    return row


def load_amazon(directory: str | Path) -> Dataset:
    """``*.inter.json`` ({user: [item, ...]} in time order) and ``*.item.json`` ({item: {title,
    description, brand, categories}}), as in the text-based sequential-recommendation literature."""
    directory = Path(directory)
    inter = sorted(directory.glob("*.inter.json"))
    meta = sorted(directory.glob("*.item.json"))
    if not inter or not meta:
        raise FileNotFoundError(f"{directory} has no *.inter.json and *.item.json")
    with open(meta[0], encoding="utf-8") as fh:
        items = [_amazon_item(k, v) for k, v in json.load(fh).items()]
    with open(inter[0], encoding="utf-8") as fh:
        sequences = {str(u): [str(i) for i in seq] for u, seq in json.load(fh).items()}
    return Dataset(inter[0].name.split(".")[0], items, sequences)


def _interaction_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
    else:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def load_generic(directory: str | Path) -> Dataset:
    """``items.jsonl`` (as ``hybridrec ingest`` reads it) plus ``interactions.jsonl`` or
    ``interactions.csv`` with ``user_id``, ``item_id`` and optional ``timestamp`` (numbers or ISO
    strings that sort in time order); rows with equal timestamps keep their file order."""
    directory = Path(directory)
    with open(directory / "items.jsonl", encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    source = next((directory / n for n in ("interactions.jsonl", "interactions.csv") if (directory / n).exists()), None)
    if source is None:
        raise FileNotFoundError(f"{directory} has no interactions.jsonl or interactions.csv")
    per_user: dict[str, list[tuple[Any, int, str]]] = defaultdict(list)
    for n, row in enumerate(_interaction_rows(source)):
        ts = row.get("timestamp")
        try:
            key = float(ts) if ts not in (None, "") else float(n)
        except (TypeError, ValueError):
            key = str(ts)
        per_user[str(row["user_id"])].append((key, n, str(row["item_id"])))
    sequences = {u: [item for *_, item in sorted(rows, key=lambda r: (r[0], r[1]))] for u, rows in per_user.items()}
    return Dataset(directory.name, items, sequences)


def load_dataset(directory: str | Path) -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory {directory} does not exist")
    if list(directory.glob("*.inter.json")):
        return load_amazon(directory)
    return load_generic(directory)
