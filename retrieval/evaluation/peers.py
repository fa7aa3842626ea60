"""Published sequential recommenders (peers) measured on exactly ``replay.evaluate``'s splits.

The peers come from a maintained implementation, RecBole 1.2.1 (``pip install -e '.[peers]'``):
its model classes (SASRec, GRU4Rec), its data pipeline and its trainer with validation-based early
stopping. hybridrec only decides what they may learn from and asks them for rankings:

- Training: ``stages.stage_training_sequences``, what the stage trainers see (every sequence minus
  its last two items and minus the cold-items slice's items). Early stopping uses RecBole's own
  leave-one-out validation (``{"LS": "valid_only"}``): with ``split="test"`` each user's
  second-to-last item is appended as the validation target (never when it is a cold-slice item: those
  users' newest training item is RecBole's validation target instead); with ``split="valid"`` the
  evaluated target is the second-to-last item, so nothing is appended and RecBole validates on the
  training part's own newest item.
- Ranking: the same users as ``evaluate`` (same ``max_users``/``seed`` sample, same order), the
  whole catalogue minus the request's history, cut at ``replay.CUTOFF``, summarised by
  ``replay.summarise``; the result has ``evaluate``'s shape (``slices`` and per-user ``ranks``,
  methods named ``peer_<name>``), so ``paired_change`` and the report's tables take it as it is.
- An ID model knows only items it was trained on: history items it never saw are dropped from its
  input, and it can never rank an item it never saw. The cold-items slice's targets are such items
  (its rows are zero by construction: that is the slice's point). ``cold_users`` gives the peer the
  most recent history item only. ``cold_users_prefs`` gives no history at all: an ID model then has
  nothing to condition on, and its rows are the popularity of the training part (so are those of any
  request whose history the peer has never seen). ``notes`` and ``fallback_users`` say so per slice.

Example::

    peers = evaluate_peers(dataset, EvalConfig(max_users=500), peers=("sasrec", "gru4rec"))
    peers["slices"]["all"]["peer_sasrec"]["ndcg@10"], peers["ranks"]["all"]["peer_sasrec"][:5]
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.evaluation import metrics
from retrieval.evaluation.datasets import Dataset
from retrieval.evaluation.replay import CUTOFF, SLICES, EvalConfig, cold_slice_items, evaluated_users, summarise
from retrieval.evaluation.stages import stage_training_sequences
from retrieval.storage.vector_store import StoredPoint

PEERS = {"sasrec": "SASRec", "gru4rec": "GRU4Rec"}  # our name -> RecBole's model class
PREFIX = "peer_"  # the method name of a peer's rows: peer_sasrec, peer_gru4rec
INSTALL_HINT = "pip install -e '.[peers]'"
log = logging.getLogger("hybridrec.peers")

SLICE_NOTES = {
    "cold_items": "targets are items the peer never saw in training: an ID model cannot rank them (zero by construction)",
    "cold_users": "the peer gets the most recent history item only",
    "cold_users_prefs": "no history: an ID model has nothing to condition on, so these rows are the popularity of "
                        "the training part (stated preferences are text, which the peer cannot read)",
}


@dataclass
class PeerSettings:
    """Training caps: minutes on 2 CPU cores. RecBole's own model defaults otherwise (SASRec: 2 layers,
    2 heads, hidden 64, dropout 0.5, CE loss; GRU4Rec: embedding 64, hidden 128, dropout 0.3, CE)."""
    epochs: int = 30  # cap; early stopping may end sooner
    stopping_step: int = 3  # epochs without a better validation NDCG@10 before stopping
    batch_size: int = 256
    learning_rate: float = 0.001
    max_length: int = 20  # MAX_ITEM_LIST_LENGTH (RecBole's default 50; Office histories average 11)
    seed: int | None = None  # default: the evaluation's seed
    # Intra-op threads while a peer trains and ranks. On 2 shared cores one thread ran a SASRec batch
    # in 0.14 s and two in 2.1 s (threads spinning against the other processes' load).
    threads: int = 1
    show_progress: bool = True  # RecBole's per-epoch tqdm bars and its epoch log lines
    work_dir: Path | None = None  # RecBole's data, log and checkpoint folders (default: a scratch folder)
    model: dict[str, dict[str, Any]] = field(default_factory=dict)  # per peer: RecBole option overrides


def require_recbole():
    """Import RecBole (only when a peer runs), with the shims it needs on numpy 2."""
    try:
        import recbole  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(f"the peer benchmarks need RecBole, an optional extra: {INSTALL_HINT}") from exc
    # RecBole 1.2.1's Config re-creates the aliases numpy 1.24 removed from np.float_ & co, which
    # numpy 2 removed too; the metrics use np.float and np.bool. The aliases it reads must exist.
    for name, alias in {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}.items():
        np.__dict__.setdefault(name, alias)
    # Importing RecBole's sequential models (its sine.py) turns on autograd's anomaly detection for the
    # whole process: every backward then checks every gradient for NaN, 2 to 4 times slower here.
    import torch

    before = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(*before)
    return recbole


@contextlib.contextmanager
def _inside(work: Path, threads: int | None = None) -> Iterator[None]:
    """RecBole writes log/ and log_tensorboard/ under the working directory and reads its options
    from sys.argv: both are pointed away from the caller's for the duration (and torch's thread
    count set to ``threads``)."""
    import torch

    cwd, argv, before = os.getcwd(), sys.argv, torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    os.chdir(work)
    sys.argv = [argv[0] if argv else "hybridrec"]
    try:
        with warnings.catch_warnings():
            # pandas 3's copy-on-write: RecBole's fillna(inplace=True) on NaN fields is a no-op and
            # warns. The files written here have no empty field, so nothing is lost.
            warnings.filterwarnings("ignore", message=".*chained assignment.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            yield
    finally:
        os.chdir(cwd)
        sys.argv = argv
        torch.set_num_threads(before)


def peer_training_sequences(dataset: Dataset, config: EvalConfig) -> dict[str, list[str]]:
    """What RecBole gets: the stage trainers' training part, plus (split ``test`` only) each user's
    validation target as its newest item unless that item is one of the cold-items slice's, for
    RecBole's leave-one-out validation (``valid_only``: the newest item of each sequence)."""
    train = stage_training_sequences(dataset, config)
    if config.split != "test":
        return train
    cold = cold_slice_items(dataset, config)
    out = {}
    for user, seq in train.items():
        valid = dataset.sequences[user][-2]
        out[user] = seq + [valid] if valid not in cold else list(seq)
    return out


class PeerModel:
    """One trained RecBole model and its item vocabulary; ``rank`` answers requests."""

    def __init__(self, name: str, model: Any, tokens: list[str], popularity: list[str], training: dict[str, Any]):
        self.name, self.model, self.training = name, model, training
        self.tokens = tokens  # RecBole's internal id -> our item id ("" for its padding id 0)
        self.ids = {token: n for n, token in enumerate(tokens) if n > 0}
        self.popularity = popularity  # the training part's items, most taken first
        self.max_length = model.max_seq_length

    def rank(self, histories: list[list[str]], k: int = CUTOFF,
             batch: int = 256) -> tuple[list[list[str]], list[bool]]:
        """The top ``k`` of the whole catalogue the peer knows, minus each history; requests whose
        history the peer never saw get popularity. Returns the lists and which ones fell back."""
        import torch

        lists: list[list[str] | None] = [None] * len(histories)
        known = [[self.ids[i] for i in h if i in self.ids][-self.max_length:] for h in histories]
        todo = [n for n, seq in enumerate(known) if seq]
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(todo), batch):
                rows = todo[start:start + batch]
                seq = torch.zeros(len(rows), self.max_length, dtype=torch.long)
                for r, n in enumerate(rows):
                    seq[r, :len(known[n])] = torch.tensor(known[n])
                lengths = torch.tensor([len(known[n]) for n in rows], dtype=torch.long)
                from recbole.data.interaction import Interaction
                inter = Interaction({self.model.ITEM_SEQ: seq, self.model.ITEM_SEQ_LEN: lengths})
                scores = self.model.full_sort_predict(inter).reshape(len(rows), -1).clone()
                scores[:, 0] = -torch.inf  # padding
                for r, n in enumerate(rows):
                    seen = [self.ids[i] for i in histories[n] if i in self.ids]
                    if seen:
                        scores[r, seen] = -torch.inf
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                for r, n in enumerate(rows):
                    lists[n] = [self.tokens[c] for c, s in zip(top.indices[r].tolist(), top.values[r].tolist())
                                if s != -np.inf]
        fallbacks = [lst is None for lst in lists]
        for n, lst in enumerate(lists):
            if lst is None:
                seen = set(histories[n])
                lists[n] = [i for i in self.popularity if i not in seen][:k]
        return lists, fallbacks  # type: ignore[return-value]


def train_peer(name: str, sequences: dict[str, list[str]], settings: PeerSettings, seed: int, work: Path) -> PeerModel:
    """Train RecBole's ``PEERS[name]`` on ``sequences`` (oldest first) with its leave-one-out
    validation (each sequence's newest item) for early stopping; the best epoch's weights are kept."""
    require_recbole()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    model_name = PEERS[name]
    work = Path(work).resolve() / name
    data = work / "data" / "peers"
    data.mkdir(parents=True, exist_ok=True)
    # Integer tokens of our own: ids may hold anything, RecBole's files are tab-separated.
    items = sorted({i for seq in sequences.values() for i in seq})
    code = {item: str(n) for n, item in enumerate(items)}
    with open(data / "peers.inter", "w", encoding="utf-8") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, (user, seq) in enumerate(sorted(sequences.items())):
            for t, item in enumerate(seq):
                fh.write(f"{u}\t{code[item]}\t{t}\n")
    options = {
        "data_path": str(work / "data"), "checkpoint_dir": str(work / "saved"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "use_gpu": False, "seed": seed, "reproducibility": True, "state": "INFO", "worker": 0,
        "epochs": settings.epochs, "stopping_step": settings.stopping_step, "train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate, "MAX_ITEM_LIST_LENGTH": settings.max_length,
        "train_neg_sample_args": None,  # CE loss over the whole catalogue (RecBole's default loss for both)
        "eval_args": {"split": {"LS": "valid_only"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "eval_batch_size": 1024,
        "show_progress": settings.show_progress,
        **settings.model.get(name, {}),
    }
    started = time.perf_counter()
    with _inside(work, settings.threads):
        config = Config(model=model_name, dataset="peers", config_dict=options)
        init_seed(seed, True)
        recdata = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, recdata)
        init_seed(seed, True)
        model = get_model(model_name)(config, train_data.dataset)
        trainer = Trainer(config, model)
        epochs_run = []
        train_epoch = trainer._train_epoch
        trainer._train_epoch = lambda *a, **kw: (epochs_run.append(1), train_epoch(*a, **kw))[1]
        trainer.logger = log.getChild(name)  # RecBole logs to the root logger; its epoch lines go to ours
        if settings.show_progress and not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False
        best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=settings.show_progress)
        trainer.tensorboard.close()
        # Our own checkpoint, just written: it pickles RecBole's Config, so not weights_only.
        state = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
    tokens = [""] + [items[int(t)] for t in recdata.field2id_token["item_id"][1:]]
    # What RecBole trained on: every sequence but its newest item (its validation target).
    popularity = [i for i, _ in sorted(Counter(i for seq in sequences.values() for i in seq[:-1]).items(),
                                        key=lambda kv: (-kv[1], kv[0]))]
    import recbole
    training = {
        "model": model_name, "package": f"recbole {recbole.__version__}",
        "epochs_run": len(epochs_run), "best_epoch": state["epoch"] + 1,  # 1-based
        "best_valid": {k: float(v) for k, v in (best_valid or {}).items()},
        "valid_metric": "ndcg@10", "best_valid_score": float(best_score),
        "parameters": sum(p.numel() for p in model.parameters()),
        "options": {k: v for k, v in options.items() if k not in ("data_path", "checkpoint_dir", "load_col")},
        "training_sequences": len(sequences), "items": len(items), "seconds": time.perf_counter() - started,
    }
    return PeerModel(name, model, tokens, popularity, training)


def evaluate_peers(dataset: Dataset, config: EvalConfig | None = None, slices: tuple[str, ...] = SLICES,
                   peers: tuple[str, ...] = ("sasrec", "gru4rec"), settings: PeerSettings | None = None,
                   points: list[StoredPoint] | None = None) -> dict[str, Any]:
    """Train each peer on the training part and rank for ``evaluate``'s users on ``slices``.

    Returns ``evaluate``'s shape: ``{"slices": {slice: {"peer_<name>": metrics}}, "ranks": {slice:
    {"peer_<name>": [rank or None per user]}}, "config", "dataset", "seconds"}`` plus ``peers``
    (each one's training record), ``notes`` and ``fallback_users`` per slice. ``points`` (the
    catalogue encoded, as ``evaluate`` takes them) give the intra-list diversity; without them
    ``ild@10`` is None.
    """
    started = time.perf_counter()
    config = config or EvalConfig()
    settings = settings or PeerSettings()
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}: choose from {sorted(PEERS)}")
    require_recbole()
    # The users, histories, slices and head exactly as ``evaluate`` draws them.
    cases, users = evaluated_users(dataset, config)
    catalogue_ids = [row["id"] for row in dataset.items]
    cold = cold_slice_items(dataset, config)
    histories = {u: c.history for u, c in cases.items()}
    popularity = Counter(i for h in histories.values() for i in h)
    head = {i for i, _ in popularity.most_common(round(len(catalogue_ids) * config.long_tail_head))}
    cold_histories = {u: [i for i in h if i not in cold] for u, h in histories.items()}
    requests = {
        "all": (users, lambda u: cases[u].history),
        "cold_items": ([u for u in users if cases[u].target in cold and cold_histories[u]], lambda u: cold_histories[u]),
        "cold_users": (users, lambda u: cases[u].history[-1:]),
        "cold_users_prefs": (users, lambda u: []),
    }
    vectors = {p.id: p.vector for p in points} if points is not None else {i: np.ones(1) for i in catalogue_ids}

    sequences = peer_training_sequences(dataset, config)
    # Absolute: RecBole runs inside it (``_inside`` changes the working directory).
    work = Path(settings.work_dir or tempfile.mkdtemp(prefix="hybridrec-peers-")).resolve()
    seed = config.seed if settings.seed is None else settings.seed
    results: dict[str, dict[str, Any]] = {s: {} for s in SLICES if s in slices}
    all_ranks: dict[str, dict[str, list[int | None]]] = {s: {} for s in results}
    fallback_users: dict[str, dict[str, int]] = {s: {} for s in results}
    trained: dict[str, Any] = {}
    for name in peers:
        method = PREFIX + name
        peer = train_peer(name, sequences, settings, seed, work)
        trained[method] = peer.training
        lists_all: list[list[str]] = []
        fallbacks_all: list[bool] = []
        for slice_name, (slice_users, history) in requests.items():
            if slice_name not in results:
                continue
            with _inside(work, settings.threads):
                lists, fallbacks = peer.rank([history(u) for u in slice_users])
            ranks = [metrics.target_rank(lst, cases[u].target) for u, lst in zip(slice_users, lists)]
            results[slice_name][method] = _summary(ranks, lists, catalogue_ids, vectors, points is not None)
            all_ranks[slice_name][method] = ranks
            fallback_users[slice_name][method] = sum(fallbacks)
            if slice_name == "all":
                lists_all, fallbacks_all = lists, fallbacks
        if "long_tail" in results and "all" in results:
            tail = [n for n, u in enumerate(users) if cases[u].target not in head]
            all_ranks["long_tail"][method] = tail_ranks = [all_ranks["all"][method][n] for n in tail]
            results["long_tail"][method] = _summary(tail_ranks, [lists_all[n] for n in tail], catalogue_ids,
                                                    vectors, points is not None)
            fallback_users["long_tail"][method] = sum(fallbacks_all[n] for n in tail)
    return {
        "dataset": {"name": dataset.name, **dataset.stats()},
        "config": {**{k: v for k, v in asdict(config).items() if k in ("seed", "split", "max_users",
                                                                      "cold_item_fraction", "long_tail_head")},
                   "cold_items": len(cold), "long_tail_head_items": len(head), "evaluated_users": len(users),
                   "cutoff": CUTOFF},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "slices": results,
        "ranks": all_ranks,
        "peers": trained,
        "notes": {s: SLICE_NOTES[s] for s in results if s in SLICE_NOTES},
        "fallback_users": fallback_users,  # requests answered with popularity: no history item the peer knows
        "seconds": time.perf_counter() - started,
    }


def _summary(ranks, lists, catalogue_ids, vectors, with_vectors: bool) -> dict[str, Any]:
    out = summarise(ranks, lists, catalogue_ids, vectors)
    if not with_vectors and "ild@10" in out:
        out["ild@10"] = None  # no item vectors given: diversity is not measured
    return out
