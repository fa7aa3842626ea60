"""One data directory, opened: store, event log, encoders, catalogue, profiles, recommender.

The service, the CLI, the ingest job and the evaluation all open an ``Engine``; it is the only
place that knows how the pieces fit together.
"""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from encoders import BiEncoder
from retrieval.pipeline.config import RecommendConfig
from retrieval.pipeline.recommender import Recommender
from retrieval.registry import ModelRegistry
from retrieval.state.bm25 import Bm25Encoder
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import POSITIVE_TYPES, CoOccurrenceIndex
from retrieval.state.event_writer import EventWriter
from retrieval.state.profiles import PROFILES_SEQ, ProfileConfig, Profiles, StaleProfiles
from retrieval.storage.edge import EdgeVectorStore
from retrieval.storage.event_log import EventLog
from retrieval.storage.layout import Layout, read_layout
from retrieval.storage.vector_store import VectorStore

log = logging.getLogger("hybridrec.engine")
PROFILE_IDS, SALTED = "profile_ids", "salted"  # how profiles are named in the vector store


@dataclass
class EngineConfig:
    """What an engine opens with. The service builds it from its settings (``engine_config``), whose
    ``profiles`` and ``recommend`` sections are these two fields."""

    data_dir: Path = Path("data")
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    encoder_path: str | None = None
    device: str = "auto"
    profiles: ProfileConfig = field(default_factory=ProfileConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)


@dataclass(frozen=True)
class Forgetting:
    """What forgetting a user did: whether there was anything, how many events went, and the
    trained versions (``ModelRegistry.learned_from``) that learned from the user."""

    forgotten: bool
    events_deleted: int
    models_trained_on_user: list[dict]

    def describe(self) -> str:
        """One line for the audit log."""
        if not self.forgotten:
            return "nothing to forget"
        models = ", ".join(f"{m['kind']} {m['version']}" for m in self.models_trained_on_user) or "no model"
        return f"forgotten: {self.events_deleted} events; trained on by {models}"


def open_store(config: EngineConfig) -> VectorStore:
    """The embedded Qdrant engine under the data directory, or a Qdrant server when a URL is set."""
    if config.qdrant_url:
        from qdrant_client import QdrantClient

        from retrieval.storage.client import ClientVectorStore

        return ClientVectorStore(QdrantClient(url=config.qdrant_url, api_key=config.qdrant_api_key))
    return EdgeVectorStore(Path(config.data_dir) / "collections")


class Engine:
    """Everything hybridrec keeps, for one data directory.

    Example::

        engine = Engine.open(EngineConfig(data_dir=Path("data")))
        engine.catalogue.upsert([{"id": "a", "title": "Red stapler"}])
        engine.recommender.recommend(RecommendRequest(query="stapler"))
        engine.close()
    """

    def __init__(self, config: EngineConfig, store: VectorStore, event_log: EventLog, encoder: BiEncoder,
                 layout: Layout | None = None, lock=None):
        self.config = config
        self.store = store
        self.log = event_log
        self.encoder = encoder
        self.layout = layout or Layout()
        self._lock_file = lock
        self.bm25 = Bm25Encoder()
        self.index = CoOccurrenceIndex()
        self.stale_profiles = StaleProfiles()
        n = 0
        for event in event_log.iter_events():
            if event.item_id is not None and event.type in POSITIVE_TYPES:
                self.index.add(event.user_id, event.item_id)
                n += 1
        self.catalogue, self.profiles, self.recommender = self.wire(self.layout, encoder)
        if event_log.get_meta(PROFILE_IDS) != SALTED:
            # Profiles were stored under the users' own ids before: store them again under salted ones.
            store.drop_collection(self.layout.users)
            self.catalogue, self.profiles, self.recommender = self.wire(self.layout, encoder)
            rebuilt = self.profiles.rebuild()
            event_log.set_meta(PROFILES_SEQ, str(event_log.max_seq()))
            event_log.set_meta(PROFILE_IDS, SALTED)
            if rebuilt:
                log.warning("stored %d user profiles again under salted ids (a one-time upgrade)", rebuilt)
        repaired = self.profiles.repair()
        if repaired:
            log.warning("refreshed %d user profiles that were behind the event log", repaired)
        self.models = ModelRegistry(config.data_dir)
        self.rerankers = self.models.rerankers
        self.reload_reranker()
        self.event_writer = EventWriter(lambda: self.profiles)
        log.info("engine open: %d items, %d events (%d co-occurrence entries)",
                 self.catalogue.count(), event_log.count(), n)

    @classmethod
    def open(cls, config: EngineConfig, encoder: BiEncoder | None = None) -> "Engine":
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_data_dir(data_dir)
        try:
            layout = read_layout(data_dir)
            if encoder is None:
                # A reindexed directory names its encoder; an explicit HYBRIDREC_ENCODER wins.
                encoder = BiEncoder(config.encoder_path or layout.encoder, device=config.device)
            return cls(config, open_store(config), EventLog(data_dir / "events.sqlite3"), encoder, layout, lock)
        except BaseException:
            lock.close()
            raise

    def wire(self, layout: Layout, encoder: BiEncoder,
             index: CoOccurrenceIndex | None = None) -> tuple[Catalogue, Profiles, Recommender]:
        """Catalogue, profiles and recommender over a layout's collections (created if missing),
        fused with the layout's weights where it has its own; ``index``: another co-occurrence
        index than the log's (a trainer's replay of an earlier moment of the log)."""
        serving = index is None  # a trainer's replay keeps its own stale set
        index = self.index if index is None else index
        catalogue = Catalogue(self.store, encoder, self.bm25, collection=layout.items)
        profiles = Profiles(self.store, self.log, catalogue, index, self.config.profiles, collection=layout.users,
                            stale=self.stale_profiles if serving else None)
        recommend = self.config.recommend.with_weights(layout.weights)
        return catalogue, profiles, Recommender(catalogue, profiles, index, recommend)

    def switch(self, layout: Layout, encoder: BiEncoder,
               wired: tuple[Catalogue, Profiles, Recommender] | None = None) -> None:
        """Serve another layout (after a reindex). The new objects exist before the swap, so a
        request in flight finishes on the old catalogue and the next one sees the new."""
        catalogue, profiles, recommender = wired or self.wire(layout, encoder)
        recommender.reranker = self.recommender.reranker
        recommender.query_suggest = self.recommender.query_suggest
        self.encoder, self.catalogue, self.profiles, self.recommender, self.layout = (
            encoder, catalogue, profiles, recommender, layout)

    def forget_user(self, user_id: str) -> Forgetting:
        """Forget a user everywhere the engine keeps them (``Profiles.forget``), and say which
        trained model versions learned from them. Idempotent."""
        first_seq = self.log.first_seq(user_id)
        events = sum(self.log.event_counts(user_id).values())
        forgotten = self.profiles.forget(user_id)
        return Forgetting(forgotten, events, self.models.learned_from(first_seq) if forgotten else [])

    def reload_reranker(self) -> str | None:
        """Serve the newest accepted reranker (loaded fully before the swap, so requests never
        wait or see a half-loaded model); returns its version, or None when there is none."""
        meta = self.rerankers.latest_accepted()
        current = self.recommender.reranker
        if meta is None:
            self.recommender.reranker = None
            return None
        if current is not None and current.version == meta["version"]:
            return current.version
        try:
            loaded = self.rerankers.load(meta["version"], device=self.config.device)
        except (ValueError, OSError, KeyError) as err:
            # A model this version cannot read must not take the service down: keep what serves.
            log.error("reranker %s cannot be served: %s; still serving %s", meta["version"], err,
                      current.version if current else "fused retrieval")
            return current.version if current else None
        self.recommender.reranker = loaded
        log.info("serving reranker %s, %s (%s)", meta["version"], loaded.description, meta.get("reason", ""))
        return meta["version"]

    def close(self) -> None:
        self.event_writer.close()
        self.store.close()
        self.log.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


class DataDirectoryInUse(RuntimeError):
    """Another process holds the data directory's lock; the message names it and what to do."""


def lock_data_dir(data_dir: Path):
    """Hold an exclusive lock on the data directory: two processes must never open the same
    embedded shards (e.g. ``hybridrec ingest`` while ``hybridrec serve`` runs on it)."""
    fh = open(data_dir / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip() or "another process"
        fh.close()
        raise DataDirectoryInUse(
            f"data directory {data_dir} is in use by {owner}; stop it first, or send the work to the running "
            "service through its API (PUT /v1/items, POST /v1/admin/reindex)"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh
