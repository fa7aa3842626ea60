"""The learned ranker: gradient-boosted trees that score a candidate from its retrieval evidence.

Fused retrieval adds up reciprocal ranks with fixed weights; the trees learn from the event log
how much each piece of evidence is worth and how pieces interact (a collaborative hit on a popular
item means less than one on a rare item; an item in the newest item's category after a long
history means more). Trained pointwise on "was this candidate the next item taken", which orders
candidates by the estimated probability. Scoring 100 candidates takes about a millisecond on a CPU.

Example::

    model = RankingModel.fit(features, labels)   # one row per candidate, labels 0/1
    model.score(features_of_one_list)             # higher is better
    model.save(folder); RankingModel.load(folder)
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import ThreadpoolController

from retrieval.ranking.features import CROSS_ENCODER_COLUMN, FEATURE_NAMES, OPTIONAL_COLUMNS, SEQUENCE_COLUMN

# A request scores at most a few hundred rows: OpenMP threads cost more than they save there, and
# on a busy machine their hand-offs dominate the tail latency (benchmarks/rerank.py, ranker stage).
_THREADS = ThreadpoolController()

MODEL_FILE = "ranker.pkl"
INFO_FILE = "ranker.json"


class RankingModel:
    """Scores rows of ``ranking.features.FEATURE_NAMES``; higher is better."""

    def __init__(self, trees: HistGradientBoostingClassifier, uses_cross_encoder: bool,
                 feature_names: tuple[str, ...] = FEATURE_NAMES, uses_sequence: bool = False):
        self.trees = trees
        self.uses_cross_encoder = uses_cross_encoder
        self.uses_sequence = uses_sequence
        self.feature_names = tuple(feature_names)
        used = {"cross_encoder": uses_cross_encoder, "sequence_similarity": uses_sequence}
        # The columns this model reads, by name, in its own order: a model trained before a feature
        # was added keeps reading exactly what it was trained on; an optional column only if it was
        # trained with the model that fills it.
        self.read = tuple(n for n in self.feature_names if n not in OPTIONAL_COLUMNS or used[n])
        self._read = [FEATURE_NAMES.index(n) for n in self.read]

    def _columns(self, features: np.ndarray) -> np.ndarray:
        return features[:, self._read]

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, uses_cross_encoder: bool = False,
            seed: int = 0, uses_sequence: bool = False) -> "RankingModel":
        """``features``: (n, len(FEATURE_NAMES)); ``labels``: 1 for the item the user took next.
        Without ``uses_cross_encoder`` (``uses_sequence``) the cross-encoder's (sequence encoder's)
        column is not read at all."""
        if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"features must have {len(FEATURE_NAMES)} columns, got {features.shape}")
        if uses_cross_encoder and np.isnan(features[:, CROSS_ENCODER_COLUMN]).any():
            raise ValueError("uses_cross_encoder needs a cross-encoder score for every candidate")
        if uses_sequence and np.isnan(features[:, SEQUENCE_COLUMN]).all():
            raise ValueError("uses_sequence needs the sequence encoder's similarity in the features")
        labels = np.asarray(labels, dtype=np.int8)
        if labels.min(initial=1) == labels.max(initial=0):
            raise ValueError("the training lists hold only one class: no next item was ever among the candidates")
        # Settings chosen on validation of the shared dataset (6,000 lists of 50): 200 shallow trees;
        # deeper or longer boosting did not help. Small logs get smaller leaves so trees can split.
        trees = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
            min_samples_leaf=int(np.clip(len(labels) // 2000, 5, 50)), random_state=seed)
        model = cls(trees, uses_cross_encoder, uses_sequence=uses_sequence)
        trees.fit(model._columns(features), labels)
        return model

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float64)
        with _THREADS.limit(limits=1, user_api="openmp"):
            return self.trees.predict_proba(self._columns(features))[:, 1]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_bytes(pickle.dumps(self.trees))
        (folder / INFO_FILE).write_text(json.dumps(
            {"features": list(self.feature_names), "uses_cross_encoder": self.uses_cross_encoder,
             "uses_sequence": self.uses_sequence,
             "scikit_learn": sklearn.__version__}, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> "RankingModel":
        """Refuses a model trained on a feature this version no longer computes; one trained before
        features were added reads the ones it knows."""
        folder = Path(folder)
        info = json.loads((folder / INFO_FILE).read_text())
        unknown = [n for n in info["features"] if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"ranker in {folder} was trained on features this version no longer computes "
                             f"({', '.join(unknown)}); retrain it with `hybridrec train reranker`")
        # The file is one this service wrote into its own data directory (never user input).
        return cls(pickle.loads((folder / MODEL_FILE).read_bytes()), bool(info["uses_cross_encoder"]),
                   tuple(info["features"]), bool(info.get("uses_sequence", False)))
