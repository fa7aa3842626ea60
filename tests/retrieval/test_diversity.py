"""MMR and the per-category cap: pure relevance at 0, more variety as the knob rises."""

import numpy as np
import pytest

from retrieval.pipeline.diversity import diversify


def _vectors():
    rng = np.random.default_rng(0)
    base = {"pens": rng.normal(size=16), "lamps": rng.normal(size=16)}
    vectors, categories = {}, {}
    for n in range(6):  # six near-copies of a pen, best first, then lamps
        vectors[f"pen{n}"] = base["pens"] + 0.05 * rng.normal(size=16)
        categories[f"pen{n}"] = "Pens"
    for n in range(3):
        vectors[f"lamp{n}"] = base["lamps"] + 0.05 * rng.normal(size=16)
        categories[f"lamp{n}"] = "Lamps"
    ids = [f"pen{n}" for n in range(6)] + [f"lamp{n}" for n in range(3)]
    relevance = list(np.linspace(1.0, 0.6, len(ids)))
    return ids, relevance, vectors, categories


def _mean_pairwise_distance(ids, vectors):
    m = np.stack([vectors[i] / np.linalg.norm(vectors[i]) for i in ids])
    sims = m @ m.T
    return float(1 - sims[np.triu_indices(len(ids), 1)].mean())


def test_zero_diversity_keeps_the_relevance_order():
    ids, rel, vectors, _ = _vectors()
    assert [p.id for p in diversify(ids, rel, vectors, 0.0, 5)] == ids[:5]


def test_more_diversity_means_more_varied_lists():
    ids, rel, vectors, _ = _vectors()
    spread = [_mean_pairwise_distance([p.id for p in diversify(ids, rel, vectors, d, 4)], vectors)
              for d in (0.0, 0.5, 0.9)]
    assert spread[0] < spread[1] <= spread[2]
    picked = diversify(ids, rel, vectors, 0.5, 4)
    assert picked[0].id == "pen0"  # the most relevant item always leads
    assert any(p.id.startswith("lamp") for p in picked)
    moved = [p for p in picked if p.relevance_rank != p.rank]
    assert moved and all(p.max_similarity >= 0 for p in picked)


def test_category_cap_holds_while_other_candidates_exist_and_fills_after():
    ids, rel, vectors, cats = _vectors()
    picked = diversify(ids, rel, vectors, 0.0, 5, cats, max_per_category=2)
    assert [p.id for p in picked][:4] == ["pen0", "pen1", "lamp0", "lamp1"]
    assert sum(cats[p.id] == "Pens" for p in picked[:4]) == 2
    # Only pens are left after the lamps run out: the list is filled rather than cut short.
    assert len(diversify(ids, rel, vectors, 0.0, 9, cats, max_per_category=2)) == 9


def test_diversity_out_of_range_is_refused():
    ids, rel, vectors, _ = _vectors()
    with pytest.raises(ValueError):
        diversify(ids, rel, vectors, 1.5, 3)
