"""The model registry: trained models as versioned folders under ``<data_dir>/models/``, which
serving loads and training writes; both import it, neither imports the other.

Example::

    registry = ModelRegistry(Path("data"))
    registry.rerankers.latest_accepted()        # metadata of the model to serve, or None
    registry.latest_accepted_encoder()          # folder of the newest accepted encoder, or None
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from encoders.cross_encoder import CrossEncoderReranker
from encoders.sequence import SequenceModel
from retrieval.pipeline.sources import LoadedSequence
from retrieval.ranking.model import RankingModel
from retrieval.ranking.rerank import LoadedReranker
from retrieval.storage.files import sync_folder, sync_tree

log = logging.getLogger("hybridrec.models")

METADATA_FILE = "metadata.json"
MODELS_DIR = "models"
ENCODER_MODELS = "encoder"
RERANKER_MODELS = "reranker"
SEQUENCE_MODELS = "sequence"
CROSS_ENCODER_FOLDER = "cross_encoder"  # inside a reranker version that has one
RANKER_SEQUENCE_FOLDER = "sequence"  # inside a reranker version trained with a sequence encoder


def sequence_left_out(metadata: dict[str, Any]) -> int:
    """How many of each user's newest items a sequence encoder version did not train on (1 for
    versions saved before the setting existed)."""
    return int((metadata.get("settings") or {}).get("left_out", 1))


def read_metadata(folder: str | Path) -> dict[str, Any] | None:
    """A saved model's metadata, or None where the folder holds no version of ours."""
    meta = Path(folder) / METADATA_FILE
    return json.loads(meta.read_text()) if meta.exists() else None


class ModelVersions:
    """Trained models under ``root/<version>/``, each with a ``metadata.json`` that says whether
    it was accepted. A version appears only when complete (written beside it, then renamed), so
    a crash while saving never leaves a half model that could be served."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def save(self, write: Callable[[Path], None], metadata: dict[str, Any]) -> str:
        """``write(folder)`` writes the model; returns the new version."""
        version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime())
        n = 1
        while (self.root / version).exists():
            version = f"{version.split('.')[0]}.{n}"
            n += 1
        for stale in self.root.glob(".v*.partial"):  # a save that crashed: never listed, only in the way
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".{version}.partial"
        write(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}, indent=2))
        sync_tree(tmp)  # a rename never publishes a version whose files a power cut empties
        tmp.rename(self.root / version)
        sync_folder(self.root)
        return version

    def path(self, version: str) -> Path:
        return self.root / version

    def all(self) -> list[dict[str, Any]]:
        """Every saved version's metadata, oldest first; one that cannot be read is left out (and
        logged), so a damaged copy of ``models/`` never keeps the service from starting."""
        out = []
        for path in sorted(self.root.glob("v*")):
            try:
                meta = read_metadata(path) if path.is_dir() else None
            except (OSError, ValueError) as err:
                log.error("model version %s is unreadable (%s: %s) and is left out; delete or copy it again",
                          path, type(err).__name__, err)
                continue
            if meta is not None:
                out.append(meta)
        return out

    def latest_accepted(self) -> dict[str, Any] | None:
        accepted = [m for m in self.all() if m.get("accepted")]
        return accepted[-1] if accepted else None

    def servable(self, version: str, kind: str, allow_rejected: bool = False) -> dict[str, Any]:
        """A version's metadata, if it may be loaded: saved whole and accepted (``allow_rejected``:
        measuring a rejected model offline; serving never sets it)."""
        meta = read_metadata(self.path(version))
        if meta is None:
            raise ValueError(f"{kind} {version} has no {METADATA_FILE}; it is not a saved version")
        if not meta.get("accepted") and not allow_rejected:
            raise ValueError(f"{kind} {version} was not accepted; it is never served")
        return meta


class RerankerVersions(ModelVersions):
    """Reranker models; only an accepted one can be loaded for serving."""

    @staticmethod
    def fits(meta: dict[str, Any], item_space: dict[str, Any]) -> bool:
        """Whether a version can serve over ``item_space``: a plain ranker anywhere (as it always
        could), one that reads a sequence encoder only over the item vectors that encoder read."""
        return not (meta.get("ranker") or {}).get("sequence") or (meta.get("sequence") or {}).get("item_space") == item_space

    def fitting(self, item_space: dict[str, Any]) -> list[dict[str, Any]]:
        """Accepted versions that fit ``item_space``, newest first."""
        return [m for m in reversed(self.all()) if m.get("accepted") and self.fits(m, item_space)]

    def load(self, version: str, device: str = "auto", allow_rejected: bool = False,
             item_space: dict[str, Any] | None = None) -> LoadedReranker:
        """``allow_rejected`` is for measuring a rejected model offline (evaluation); serving never sets it.
        A ranker that reads a sequence encoder loads only over the item space that encoder was
        trained in (``item_space``: the items as they are now; None skips the check)."""
        folder = self.path(version)
        meta = self.servable(version, "reranker", allow_rejected)
        if "ranker" not in meta:
            raise ValueError(f"reranker {version} predates the learned ranker; retrain with `hybridrec train reranker`")
        cross_encoder = sequence = None
        if meta["ranker"].get("cross_encoder"):
            cross_encoder = CrossEncoderReranker(folder / CROSS_ENCODER_FOLDER, device=device).for_inference()
        if item_space is not None and not self.fits(meta, item_space):
            raise ValueError(f"reranker {version} reads a sequence encoder trained over the item vectors of "
                             f"{meta['sequence']['item_space']}, and the items are now {item_space}; retrain it with "
                             "`hybridrec train sequence` and `hybridrec train reranker`")
        if meta["ranker"].get("sequence"):
            sequence = SequenceModel.load(folder / RANKER_SEQUENCE_FOLDER, device=device)
        return LoadedReranker(version, RankingModel.load(folder), cross_encoder, meta, sequence)


class SequenceVersions(ModelVersions):
    """Sequence encoders; only an accepted one can be loaded for serving, and only over the item
    space it was trained in (its inputs and outputs are that encoder's vectors)."""

    @property
    def checkpoint(self) -> Path:
        """Where an interrupted training keeps its state to resume from (it holds what the model
        learned of every user so far: forgetting a user deletes it)."""
        return self.root / ".sequence-checkpoint.pt"

    def load(self, version: str, item_space: dict[str, Any], device: str = "auto",
             allow_rejected: bool = False) -> LoadedSequence:
        folder = self.path(version)
        meta = self.servable(version, "sequence encoder", allow_rejected)
        if meta.get("item_space") != item_space:
            raise ValueError(f"sequence encoder {version} was trained over the item vectors of "
                             f"{meta.get('item_space')}, and the items are now {item_space}; retrain it with "
                             "`hybridrec train sequence`")
        return LoadedSequence(version, SequenceModel.load(folder, device=device), float(meta["fusion_weight"]), meta)

    def fitting(self, item_space: dict[str, Any], accepted_only: bool = True, left_out: int = 1) -> list[dict[str, Any]]:
        """Metadata of the versions trained over ``item_space`` (of the accepted ones, unless
        ``accepted_only`` is off: a ranker may read a version that was refused as a source), and
        without at least ``left_out`` of each user's newest items (a ranker needs its own steps
        left out); newest first."""
        return [m for m in reversed(self.all()) if m.get("item_space") == item_space
                and (m.get("accepted") or not accepted_only) and sequence_left_out(m) >= left_out]

    def newest_fitting(self, item_space: dict[str, Any], accepted_only: bool = True,
                       left_out: int = 1) -> dict[str, Any] | None:
        """The newest of ``fitting``, or None."""
        return next(iter(self.fitting(item_space, accepted_only, left_out)), None)


def trained_fusion_weights(model_dir: str | Path) -> dict[str, float] | None:
    """The fusion weights a trained encoder was chosen with (its version's metadata), or None for
    a model the encoder trainer did not make (the bundled one, or an older version)."""
    weights = (read_metadata(model_dir) or {}).get("fusion_weights")
    return {k: float(v) for k, v in weights.items()} if weights else None


class ModelRegistry:
    """Where a data directory keeps its trained models: one place for the paths."""

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir) / MODELS_DIR
        self.encoder_dir = self.root / ENCODER_MODELS
        self.reranker_dir = self.root / RERANKER_MODELS
        self.sequence_dir = self.root / SEQUENCE_MODELS
        self.encoders = ModelVersions(self.encoder_dir)
        self.rerankers = RerankerVersions(self.reranker_dir)
        self.sequences = SequenceVersions(self.sequence_dir)

    def latest_accepted_encoder(self) -> Path | None:
        """The folder of the newest accepted encoder, or None."""
        return latest_accepted_encoder(self.encoder_dir)

    def learned_from(self, first_seq: int | None) -> list[dict[str, Any]]:
        """Trained versions whose training read the log at or past ``first_seq`` (a user's oldest
        event): they learned from that user, and only retraining takes it out of them. A version
        without ``log_seq`` (trained before it was recorded) is listed as possibly so."""
        if first_seq is None:
            return []
        out = []
        for kind, versions in (("encoder", self.encoders), ("reranker", self.rerankers),
                               ("sequence", self.sequences)):
            for meta in versions.all():
                seq = meta.get("log_seq")
                if seq is None or seq >= first_seq:
                    out.append({"kind": kind, "version": meta["version"], "accepted": bool(meta.get("accepted")),
                                "certain": seq is not None})
        return out


def latest_accepted_encoder(models_dir: str | Path) -> Path | None:
    """The folder of the newest accepted encoder version under ``models_dir``, or None."""
    meta = ModelVersions(models_dir).latest_accepted()
    return Path(models_dir) / meta["version"] if meta else None
