"""Metric functions against hand-computed cases."""

import math

import numpy as np
import pytest

from retrieval.evaluation import metrics


def test_target_rank_including_absent_and_empty():
    assert metrics.target_rank(["a", "b", "c"], "b") == 2
    assert metrics.target_rank(["a", "b"], "z") is None
    assert metrics.target_rank([], "a") is None


@pytest.mark.parametrize("rank, k, recall, ndcg", [
    (1, 10, 1.0, 1.0),
    (3, 10, 1.0, 1 / math.log2(4)),  # 0.5
    (10, 10, 1.0, 1 / math.log2(11)),
    (11, 10, 0.0, 0.0),
    (None, 10, 0.0, 0.0),
])
def test_recall_and_ndcg(rank, k, recall, ndcg):
    assert metrics.recall_at(rank, k) == recall
    assert metrics.ndcg_at(rank, k) == pytest.approx(ndcg)


def test_mrr_with_cutoff():
    assert metrics.reciprocal_rank(4) == 0.25
    assert metrics.reciprocal_rank(4, k=3) == 0.0
    assert metrics.reciprocal_rank(None) == 0.0


def test_coverage_counts_distinct_items_in_top_k():
    lists = [["a", "b", "x"], ["a", "c"]]
    assert metrics.coverage(lists, catalogue_size=10, k=2) == pytest.approx(3 / 10)
    assert metrics.coverage([], 10) == 0.0


def test_intra_list_diversity():
    same = np.array([[1.0, 0.0], [2.0, 0.0]])
    orthogonal = np.array([[1.0, 0.0], [0.0, 1.0]])
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert metrics.intra_list_diversity(same) == pytest.approx(0.0)
    assert metrics.intra_list_diversity(orthogonal) == pytest.approx(1.0)
    assert metrics.intra_list_diversity(opposite) == pytest.approx(2.0)
    # three vectors: pairs (0,1)=0 sim, (0,2)=1 sim, (1,2)=0 sim -> mean sim 1/3
    assert metrics.intra_list_diversity(np.array([[1.0, 0], [0, 1.0], [1.0, 0]])) == pytest.approx(2 / 3)
    assert metrics.intra_list_diversity(np.array([[1.0, 0.0]])) == 0.0


def test_gini_of_exposure():
    catalogue = ["a", "b", "c", "d"]
    assert metrics.gini([["a"], ["b"], ["c"], ["d"]], catalogue, k=1) == pytest.approx(0.0)
    # all exposure on one of four items: (n-1)/n
    assert metrics.gini([["a"], ["a"]], catalogue, k=1) == pytest.approx(0.75)
    assert metrics.gini([], catalogue) == 0.0
