"""Re-encode the catalogue and every profile with another encoder, then switch atomically.

New collections are written beside the served ones; only when both are complete does
``active.json`` change (one ``os.replace``). Any failure before that drops the new collections
and leaves the old layout serving, untouched. The previous layout is kept until the next
reindex, so a process still serving it is never pulled from under.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from encoders import BiEncoder
from retrieval.engine import Engine
from retrieval.registry import trained_fusion_weights
from retrieval.storage.layout import (
    ITEMS,
    SCRATCH_PREFIX,
    USERS,
    Layout,
    is_layout_collection,
    layout_collection,
    write_layout,
)
from retrieval.storage.records import stored_item
from retrieval.storage.vector_store import scroll_all

# A reindex switches one instance's collections and layout; the others would go on serving the old
# encoder's vectors beside the new ones.
SHARED_REINDEX = ("reindexing is not supported while instances share a database (HYBRIDREC_DATABASE_URL): one "
                  "instance would switch encoders and the others would not; `hybridrec rebuild-index` rebuilds an "
                  "index with the current encoder")


class ReindexRefused(RuntimeError):
    """This engine cannot be reindexed (``SHARED_REINDEX``)."""


@dataclass
class ReindexReport:
    layout: Layout
    items: int
    users: int
    seconds: float
    dropped: list[str]


def reindex(engine: Engine, encoder: BiEncoder, encoder_path: str | None, batch_size: int = 256,
            progress: Callable[[str, int], Any] | None = None, after_batch: Callable[[int], None] | None = None
            ) -> ReindexReport:
    """Build the new layout and switch ``engine`` to it; ``after_batch`` is a test hook. A trained
    encoder's fusion weights (chosen with it on validation) become the new layout's."""
    if engine.shared:
        raise ReindexRefused(SHARED_REINDEX)
    started = time.perf_counter()
    tag = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    new = Layout(items=layout_collection(ITEMS, tag), users=layout_collection(USERS, tag), encoder=encoder_path,
                 weights=trained_fusion_weights(encoder_path) if encoder_path else None)
    old = engine.layout
    store = engine.store
    total = engine.catalogue.count()
    try:
        wired = engine.wire(new, encoder)  # creates the new collections
        catalogue, profiles, _ = wired
        bar = progress("re-encode items", total) if progress else None
        n, batches = 0, 0
        for points in scroll_all(store, old.items, batch=batch_size):
            if points:
                items = [stored_item(p.payload) for p in points]
                catalogue.write(catalogue.encode(items))
                n += len(items)
                batches += 1
                if bar is not None:
                    bar.update(len(items))
                if after_batch is not None:
                    after_batch(batches)
        if bar is not None:
            bar.close()
        catalogue.optimize()
        log_position = engine.log.max_seq()
        users = engine.log.user_ids()
        bar = progress("rebuild profiles", len(users)) if progress else None
        profiles.rebuild(users, progress=bar)
        if bar is not None:
            bar.close()
    except BaseException:
        for name in (new.items, new.users):
            store.drop_collection(name)
        engine.log.drop_items(new.items)
        raise
    write_layout(engine.config.data_dir, new)  # the switch
    engine.switch(new, encoder, wired)
    # Events that arrived while profiles were rebuilt went to the old profiles; redo those users.
    engine.profiles.refresh(engine.log.users_after(log_position))
    # Keep the layout just replaced (a process may still serve it); drop anything older: earlier
    # layouts (the first one's collections are plain "items" and "users") and the scratch
    # collections of an encoder training that was killed (none runs: this process holds the index).
    keep = {new.items, new.users, old.items, old.users}
    dropped = [c for c in store.collections() if c not in keep and (
        is_layout_collection(c, ITEMS) or is_layout_collection(c, USERS) or c.startswith(SCRATCH_PREFIX))]
    for name in dropped:
        store.drop_collection(name)
        engine.log.drop_items(name)
    return ReindexReport(new, n, len(users), time.perf_counter() - started, dropped)
