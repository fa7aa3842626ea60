"""Which collections and which encoder a data directory serves: ``active.json``.

A reindex writes new collections beside the old ones and then replaces this file atomically
(``os.replace``), so a reader sees the old layout or the new one, never a mix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from retrieval.storage.files import write_atomically

LAYOUT_FILE = "active.json"
ITEMS = "items"  # the collections of a data directory that was never reindexed
USERS = "users"
SCRATCH_PREFIX = "validate__"  # collections a trainer writes, measures in and drops


def layout_collection(kind: str, tag: str | None = None) -> str:
    """A layout's ``kind`` collection (ITEMS or USERS): the first layout's plain name, a reindex's
    ``<kind>__<tag>``."""
    return kind if tag is None else f"{kind}__{tag}"


def is_layout_collection(name: str, kind: str) -> bool:
    """Whether ``name`` is some layout's ``kind`` collection (``layout_collection``)."""
    return name == kind or name.startswith(f"{kind}__")


@dataclass(frozen=True)
class Layout:
    items: str = ITEMS
    users: str = USERS
    encoder: str | None = None  # None: the configured (or bundled) encoder
    # Fusion weights chosen for this encoder when it was trained (``train_encoder``), over the
    # configured ones: a fine-tuned dense source carries part of what BM25 did, so it serves with
    # its own balance. None: the configured weights.
    weights: dict[str, float] | None = None


def read_layout(data_dir: str | Path) -> Layout:
    path = Path(data_dir) / LAYOUT_FILE
    if not path.exists():
        return Layout()
    return Layout(**json.loads(path.read_text()))


def write_layout(data_dir: str | Path, layout: Layout) -> None:
    write_atomically(Path(data_dir) / LAYOUT_FILE, lambda fh: fh.write(json.dumps(asdict(layout), indent=2).encode()))
