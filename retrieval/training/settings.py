"""The trainers' settings, apart from the trainers: the service's settings and the CLI read them
without loading any training code."""

from __future__ import annotations

from dataclasses import dataclass

from encoders.device import resolve_device


@dataclass
class LogTrainingSettings:
    """What every trainer shares: epochs, whose newest item validation judges, the device and the seed."""

    epochs: int = 1
    # Whose newest item validation judges: a share of the users, at most this many. No user is held
    # out of training (the models never see anyone's newest item). With a fifth of the users held
    # out, the comparisons' standard errors were as large as the gains, and verdicts disagreed with
    # test both ways (docs/research.md, "Judging every user's newest item").
    validation_users: float = 1.0
    max_validation_users: int = 5000
    device: str = "auto"
    seed: int = 0


@dataclass
class TrainingSettings(LogTrainingSettings):
    positions_per_user: int = 2  # training positions taken from the end of each user's sequence
    max_lists: int = 6000  # ranking lists the ranker learns from
    # "auto": train the cross-encoder where it is affordable (CUDA); on a CPU scoring every training
    # list would take hours (benchmarks/rerank.py). "on" / "off" decide explicitly. Trained, the ranker
    # reading it serves only where clearly better on validation than the ranker without it (it costs
    # a transformer pass per candidate); "only": only rankers reading it compete (measuring it; such
    # a run is saved as rejected and never serves).
    cross_encoder: str = "auto"
    max_groups: int = 3000  # cross-encoder training groups, taken from other cases than the lists
    hard_negatives: int = 5
    random_negatives: int = 2
    candidates: int | None = None  # the top of retrieval that is reranked; default: as the service does
    # Whether the ranker may read a sequence encoder it is given: "off": it reads none; "auto": a
    # variant reading it competes only where it is clearly better on validation than the same ranker
    # without it (it costs a transformer pass per request); "only": only variants reading it compete
    # (measuring it; never served). Off by default: on the shared dataset it won validation and lost on test
    # (benchmarks/sequence_ranker.py; docs/research.md, "The sequence encoder").
    sequence: str = "off"

    def __post_init__(self) -> None:
        if self.sequence not in ("off", "auto", "only"):
            raise ValueError(f"sequence must be off, auto or only, not {self.sequence!r}")
        if self.cross_encoder not in ("auto", "on", "off", "only"):
            raise ValueError(f"cross_encoder must be auto, on, off or only, not {self.cross_encoder!r}")

    @property
    def sequence_left_out(self) -> int:
        """The ``train_sequence.left_out`` a sequence encoder this ranker reads needs: its training
        steps and each user's newest item (validation's) never learned."""
        return self.positions_per_user + 1

    def uses_cross_encoder(self) -> bool:
        return self.cross_encoder in ("on", "only") or (self.cross_encoder == "auto"
                                              and resolve_device(self.device).startswith("cuda"))


@dataclass
class EncoderTrainingSettings(LogTrainingSettings):
    # Contrastive fine-tuning of the whole transformer on (item -> next item) pairs. A linear
    # adapter over frozen vectors and a refit on every whole sequence were tried and did not earn a
    # place (docs/research.md, "Not in the product: the adapter and the refit"; benchmarks/adapter.py).
    max_pairs: int = 20000
    positions_per_user: int = 3  # training pairs taken from the end of each user's sequence
    batch_size: int = 32
    lr: float = 2e-5
    # BM25's weight for history requests (``lexical_history``), tried with each encoder; the other
    # weights stay as configured. Never 0: BM25 is the only source that reads the exact words, and
    # cold items need it (benchmarks/tune.py --round 3).
    lexical_weights: tuple[float, ...] = (1.0, 0.5)
    # The profile vector's weight in requests without a query (``dense_profile_without_query``),
    # tried with each encoder and each BM25 weight. The zero-shot profile was tuned to 0.5
    # (benchmarks/tune.py --round 3); a fine-tuned profile is worth more than that zero-shot one.
    dense_profile_weights: tuple[float, ...] = (0.5, 1.0)
    # Each user's newest items left out of the model's training data (1 or more: the newest is the
    # validation target), so that validation judges the model on a target this many steps past the
    # end of what it learned from (1: the very next item). A served model ages, and what an adapter
    # learns fades with each step (benchmarks/staleness.py). But judging two steps past did not
    # make validation predict test for full fine-tuning, and it trains on fewer pairs, so the
    # default stays 1 (docs/research.md, "The validation gap").
    validation_gap: int = 1
    # The long-tail targets, on which the new model must not be clearly worse: those outside this
    # share of the catalogue's most taken items (as ``EvalConfig.long_tail_head``).
    long_tail_head: float = 0.2


@dataclass
class SequenceTrainingSettings(LogTrainingSettings):
    """The sequence encoder (``encoders.sequence``) and how it is judged."""

    epochs: int = 40  # at most: training stops when early-stopping users stop improving
    patience: int = 3  # epochs without improvement before it stops
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    hidden: int = 128
    layers: int = 2
    heads: int = 2
    max_length: int = 20  # the newest history items the model reads
    dropout: float = 0.2
    # A share of the items' learned residuals hidden in each training window, so the model also
    # reads items by their text alone (new items have no residual).
    drop_residual: float = 0.3
    temperature: float = 0.05  # of the softmax over cosine similarities
    # The softmax learns how often each item is taken as much as what follows what, and the source
    # then crowds the lists with the most taken items, which the collaborative source already finds.
    # Training adds this times each item's log share of the training targets to its logit as a
    # fixed prior, so the learned score is what follows beyond popularity; serving leaves it out.
    popularity_correction: float = 0.0
    # Every item is a negative up to this catalogue size; above it, a seeded sample of this many.
    max_softmax_items: int = 50_000
    # Users whose second-newest item decides when training stops (a share, at most this many):
    # their newest item, which validation judges, is never read by the model, nor is this one.
    early_stop_users: float = 0.1
    max_early_stop_users: int = 1000
    # The sequence source's fusion weight, chosen on validation from these.
    fusion_weights: tuple[float, ...] = (0.25, 0.5, 1.0)
    max_validation_users: int = 3000
    long_tail_head: float = 0.2  # long-tail targets: outside this share of the most taken items
    # Each user's newest items left out of training: the newest (validation judges it), and the
    # steps before it that a learned ranker trains on (``TrainingSettings.positions_per_user``),
    # whether the ranker reads this model as a feature or the lists of the source it serves as.
    # A ranker that read a model trained on its own training steps would learn to trust it more than
    # it deserves on a request, where what comes next was never learned. With 1 the source is
    # stronger, and a ranker trained while it serves needs another encoder, trained with 3, to
    # stand in for it on its training lists (``reranker.source_stand_in``).
    left_out: int = 3  # 1 + train_reranker.positions_per_user
