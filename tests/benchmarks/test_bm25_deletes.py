"""The BM25-after-deletes benchmark (benchmarks/bm25_deletes.py) at a tiny size."""

import numpy as np

from benchmarks.bm25_deletes import measure
from benchmarks.storage_scale import synthetic_items
from retrieval.state.bm25 import Bm25Encoder


def test_deleted_items_weigh_in_bm25_until_the_small_store_is_opened_again():
    # When this fails on "as left", Qdrant rewrites BM25 statistics on delete: docs/operations.md's
    # paragraph on deleted items and BM25 is then out of date.
    bm25 = Bm25Encoder()
    rng = np.random.default_rng(0)
    row = measure("synthetic", synthetic_items(600, rng, bm25), 0.2, 50, rng, bm25)

    assert row["deleted"] == 120 and row["queries"] == 50
    assert row["as_left"]["max_relative_error"] > 0
    assert row["restarted"] == {"top10_sets_differ": 0, "max_relative_error": 0.0, "mean_relative_error": 0.0}
