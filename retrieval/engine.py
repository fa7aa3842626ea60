"""One data directory, opened: store, event log, encoders, catalogue, profiles, recommender.

The service, the CLI, the ingest job and the evaluation all open an ``Engine``; it is the only
place that knows how the pieces fit together.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from encoders import BiEncoder
from retrieval.pipeline.config import RecommendConfig
from retrieval.pipeline.recommender import Recommender
from retrieval.ranking.rerank import LoadedReranker
from retrieval.registry import ModelRegistry
from retrieval.state.bm25 import Bm25Encoder
from retrieval.state.catalogue import Catalogue
from retrieval.state.cooccurrence import POSITIVE_TYPES, CoOccurrenceIndex
from retrieval.state.event_writer import EventWriter
from retrieval.state.follower import LogFollower, OwnWrites
from retrieval.state.profiles import PROFILES_SEQ, ProfileConfig, Profiles, StaleProfiles
from retrieval.storage.edge import EdgeVectorStore
from retrieval.storage.event_log import EventLog, keyed_users, open_event_log
from retrieval.storage.layout import SCRATCH_PREFIX, USERS, Layout, is_layout_collection, read_layout
from retrieval.storage.vector_store import VectorStore, scroll_all

log = logging.getLogger("hybridrec.engine")
PROFILE_IDS, SALTED = "profile_ids", "salted"  # how profiles are named in the vector store
AUTO_INSTANCE = "auto"  # EngineConfig.instance: the first free slot, worker-0, worker-1, ...
INDEX_SNAPSHOT = "cooccurrence.npz"  # the co-occurrence index at the last shutdown, in the instance's folder
INDEX_SEQ = "index_seq"  # position up to which an instance's vector index has the record's items
REBUILD_ITEM_INDEX = "rebuild"  # INDEX_SEQ while a rebuild runs: one that was interrupted is done again at start
SERVING_SEQUENCE = "serving_sequence"  # on a shared log: the sequence encoder version every instance serves
SERVING_RERANKER = "serving_reranker"  # on a shared log: the reranker version every instance serves
RETRY_UNSERVABLE_S = 60.0  # a serving model another instance chose that this one cannot load: tried again after
SCRATCH_ROWS = "scratch_rows", "dropped"  # earlier versions left a trainer's scratch items in the record


@dataclass
class EngineConfig:
    """What an engine opens with. The service builds it from its settings (``engine_config``), whose
    ``profiles`` and ``recommend`` sections are these two fields."""

    data_dir: Path = Path("data")
    # The system of record: PostgreSQL, shared by every worker and instance, or (None) the SQLite
    # file in the data directory, for one process.
    database_url: str | None = None
    # A worker's name: its own vector index (and lock) under ``<data_dir>/instances/<name>``, so that
    # several processes on one machine serve one PostgreSQL. None: the data directory itself.
    instance: str | None = None
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
    user_key: str  # the log's keyed digest of the id, as the tombstone names the user

    @property
    def audit_target(self) -> str:
        """Who was forgotten, as the audit log names them: never by the id."""
        return f"user key {self.user_key}"

    def describe(self) -> str:
        """One line for the audit log."""
        if not self.forgotten:
            return "nothing to forget"
        models = ", ".join(f"{m['kind']} {m['version']}" for m in self.models_trained_on_user) or "no model"
        return f"forgotten: {self.events_deleted} events; trained on by {models}"


def _item_space(encoder: BiEncoder, catalogue: Catalogue) -> dict:
    return {"encoder": encoder.name, "dim": encoder.dim, "collection": catalogue.collection}


def instance_dir(config: EngineConfig) -> Path:
    """Where this instance keeps what is its own: the embedded vector index and its lock."""
    data_dir = Path(config.data_dir)
    return data_dir / "instances" / config.instance if config.instance else data_dir


def instance_id(config: EngineConfig) -> str:
    """This instance's name in the shared system of record (its positions there): random, made
    once and kept beside its vector index, so that a new, empty index starts from nothing."""
    if not config.database_url:
        return ""
    path = instance_dir(config) / "instance-id"
    if not path.exists():
        path.write_text(uuid.uuid4().hex)
    return path.read_text().strip()


def open_store(config: EngineConfig) -> VectorStore:
    """The embedded Qdrant engine of this instance, or a Qdrant server when a URL is set."""
    if config.qdrant_url:
        from qdrant_client import QdrantClient

        from retrieval.storage.client import ClientVectorStore

        return ClientVectorStore(QdrantClient(url=config.qdrant_url, api_key=config.qdrant_api_key))
    return EdgeVectorStore(instance_dir(config) / "collections")


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
        self.stale_profiles = StaleProfiles()
        self.shared = bool(config.database_url)  # other instances write the same system of record
        name = instance_id(config)
        self._keys = (f"{PROFILES_SEQ}:{name}" if name else PROFILES_SEQ, f"{INDEX_SEQ}:{name}" if name else INDEX_SEQ)
        self.own_writes = OwnWrites()
        head = event_log.head()  # derived state is built up to here; the follower takes it on from here
        self._snapshot = instance_dir(config) / INDEX_SNAPSHOT
        self.index, n = self.load_index(head)
        self._built_through = head
        self.catalogue, self.profiles, self.recommender = self.wire(self.layout, encoder)
        if event_log.get_meta(PROFILE_IDS) != SALTED and not self.shared:
            # Profiles were stored under the users' own ids before: store them again under salted ones.
            store.drop_collection(self.layout.users)
            self.catalogue, self.profiles, self.recommender = self.wire(self.layout, encoder)
            rebuilt = self.profiles.rebuild()
            event_log.set_meta(PROFILES_SEQ, str(event_log.max_seq()))
            event_log.set_meta(PROFILE_IDS, SALTED)
            if rebuilt:
                log.warning("stored %d user profiles again under salted ids (a one-time upgrade)", rebuilt)
        if event_log.get_meta(SCRATCH_ROWS[0]) != SCRATCH_ROWS[1]:
            for name in event_log.item_collections():
                if name.startswith(SCRATCH_PREFIX):
                    event_log.drop_items(name)
                    log.warning("dropped the rows of %s from the event log: scratch items an encoder training of an "
                                "earlier version wrote there (a one-time upgrade)", name)
            event_log.set_meta(*SCRATCH_ROWS)
        self.sync_item_index(head)
        if self.shared and event_log.get_meta(self._keys[0]) is None:
            # A new instance has no stored profiles: they are computed from the log until written.
            event_log.set_meta(self._keys[0], str(head))
        repaired = self.profiles.repair()
        if repaired:
            log.warning("refreshed %d user profiles that were behind the event log", repaired)
        self.models = ModelRegistry(config.data_dir)
        self._unservable: dict[str, tuple[str, float]] = {}  # meta key -> (version, when it failed to load)
        self.rerankers = self.models.rerankers
        self.sequences = self.models.sequences
        if self.shared and event_log.get_meta(SERVING_RERANKER) is not None:
            self.follow_serving_models()  # what the instances serve now, not whatever is newest here
        else:
            self.reload_reranker()
        if not (self.shared and event_log.get_meta(SERVING_SEQUENCE) is not None):
            self.reload_sequence()
        self.event_writer = EventWriter(lambda: self.profiles)
        self.follower = LogFollower(event_log, lambda: self.catalogue, lambda: self.profiles, self.own_writes,
                                    position=head, index_items=not config.qdrant_url) if self.shared else None
        self._stop_following = threading.Event()
        self._still = threading.Lock()  # held by a trainer: others' writes wait (``held_still``)
        if self.follower is not None:
            # Requests catch up before they read; this keeps an idle instance current too (and ready).
            threading.Thread(target=self._follow, name="log-follower", daemon=True).start()
        log.info("engine open: %d items, %d events (%d co-occurrence entries)%s",
                 self.catalogue.count(), event_log.count(), n, " on a shared log" if self.shared else "")

    def warm_neighbours(self) -> threading.Thread:
        """Compute the collaborative neighbour lists of the most-used items in the background, before
        the first requests need them. For serving only: lists computed while a replay adds events
        would depend on the thread's timing, and an evaluation must give the same result every run."""
        recommend = self.config.recommend
        thread = threading.Thread(target=self.index.warm, name="warm-neighbours", daemon=True,
                                  args=(recommend.collaborative_proximity, recommend.collaborative_backward))
        thread.start()
        return thread

    def load_index(self, head: int) -> tuple[CoOccurrenceIndex, int]:
        """The co-occurrence index up to ``head``: the snapshot saved at the last shutdown plus the
        log after it (or the whole log, without a usable snapshot); also how many events were read."""
        loaded = CoOccurrenceIndex.load(self._snapshot)
        index, position = loaded if loaded is not None and loaded[1] <= head else (CoOccurrenceIndex(), 0)
        if loaded is not None and position != loaded[1]:
            log.warning("the co-occurrence snapshot is ahead of the log (%d > %d): rebuilding from the log",
                        loaded[1], head)
        n = 0
        if head - position > 1_000_000:
            log.info("reading %d changes of the log into the co-occurrence index", head - position)
        while position < head:
            changes = self.log.changes_after(position, limit=50_000)
            for event in changes.events:
                if event.seq <= head and event.item_id is not None and event.type in POSITIVE_TYPES:
                    index.add(event.user_id, event.item_id)
                    n += 1
            if changes.forgotten:  # users forgotten since the snapshot
                keys = {key for _, key in changes.forgotten}
                named = keyed_users(self.log, index.user_ids(), keys)
                for user_id in named:
                    index.forget_user(user_id)
                if named:  # the file still names them: gone now, not at this instance's shutdown
                    self.drop_index_snapshot()
            position = changes.head
        return index, n

    def save_index(self) -> None:
        """Save the co-occurrence index with the log position it includes, for a fast next start."""
        # The index holds the log up to where it was built at open, plus what this engine took in
        # since (a write that bypassed the engine, straight into the log, is read at the next start).
        taken_in = max(self._built_through, self.stale_profiles.last_marked or 0)
        self.index.save(self._snapshot, self.follower.position if self.follower is not None else taken_in)

    def drop_forgotten_files(self) -> None:
        """Files that hold what a user just forgotten did: the co-occurrence snapshots
        (``drop_index_snapshot``) and an interrupted sequence training's checkpoint (a resumed run
        would carry it into a model; the next run starts over)."""
        self.drop_index_snapshot()
        self.sequences.checkpoint.unlink(missing_ok=True)

    def drop_index_snapshot(self) -> None:
        """A forgotten user must not stay in a file: the next start reads the log instead. Every
        snapshot of the data directory goes, not only this instance's: the command line's and those of
        worker slots not running now name the user too (a running instance saves its own again at
        shutdown, after it has applied the forget)."""
        data_dir = Path(self.config.data_dir)
        for path in (data_dir / INDEX_SNAPSHOT, *data_dir.glob(f"instances/*/{INDEX_SNAPSHOT}")):
            path.unlink(missing_ok=True)

    def sync_item_index(self, head: int) -> None:
        """Bring the vector index up to the items of the system of record: every item change after
        the position this instance recorded (all of them for a new index). A data directory from
        before items were kept in the record gives its items to the record once."""
        key = self._keys[1]
        position = self.log.get_meta(key)
        catalogue = self.catalogue
        if position == REBUILD_ITEM_INDEX:
            log.warning("rebuilding the item index: the last rebuild was interrupted")
            self.rebuild_item_index()
            return
        if position is None:
            recorded = next(iter(self.log.stored_items(catalogue.collection, batch=1)), [])
            if not recorded and catalogue.count():
                n = 0
                for points in scroll_all(self.store, catalogue.collection, with_vectors=True):
                    self.log.put_items(catalogue.collection, points)
                    n += len(points)
                log.warning("kept %d items in the system of record (a one-time upgrade)", n)
            elif recorded and not (self.config.qdrant_url and catalogue.count()):
                # (A shared Qdrant server that has items is another instance's index already.)
                n = catalogue.rebuild_index()
                log.info("built the vector index from %d stored items", n)
        else:
            position = int(position)
            while position < head:
                changes = self.log.changes_after(position)
                catalogue.apply([c for c in changes.items if c.seq <= head])
                position = changes.head
        self.log.set_meta(key, str(head))

    def _follow(self, interval: float = 0.5) -> None:
        while not self._stop_following.wait(interval):
            try:
                self.follow_once()
            except Exception:  # the database may be away for a moment; requests retry it themselves
                log.exception("following the shared log failed; retrying in %.1f s", interval)

    def follow_once(self) -> bool:
        """One step of the follower thread: apply what other instances wrote and serve the models
        they chose. False, and nothing applied, while a trainer holds the engine still."""
        if not self._still.acquire(blocking=False):
            return False
        try:
            if self._stop_following.is_set():
                return False
            self.catch_up()
            self.follow_serving_models()
            return True
        finally:
            self._still.release()

    @contextmanager
    def held_still(self) -> Iterator[None]:
        """Nothing other instances write reaches this engine inside the block: no events, items or
        forgotten users, no other serving model. A trainer reads one moment of the log, so its lists,
        validation and the serving models it is judged against all agree; the follower takes up
        everything held back when the block ends. For an engine that answers no requests (a
        request still catches up before it reads).

        Example::

            with engine.held_still():
                train_reranker(engine.recommender, engine.rerankers)
        """
        with self._still:  # waits for a follower step under way to finish
            yield

    def rebuild_item_index(self, progress=None) -> int:
        """Drop this instance's item collection and write it again from the system of record, with
        the vectors stored there (no re-encoding); returns how many items. For a lost or damaged
        index, or a new Qdrant server. Interrupted, it is done again at the next start."""
        self.log.set_meta(self._keys[1], REBUILD_ITEM_INDEX)
        self.store.drop_collection(self.layout.items)
        self.switch(self.layout, self.encoder)  # a fresh, empty collection
        self.catalogue.behind_record = True  # until the last item is in: a shutdown must not say otherwise
        n = self.catalogue.rebuild_index(progress)
        self.catalogue.optimize()
        self.log.set_meta(self._keys[1], str(self.log.head()))
        self.catalogue.behind_record = False
        return n

    def catch_up(self) -> int:
        """Apply what other instances wrote since this one last looked (nothing to do for one
        process on its own log); returns how many changes."""
        if self.follower is None:
            return 0
        applied, forgotten = self.follower.catch_up()
        if forgotten:
            self.drop_forgotten_files()
        if applied:
            self.event_writer.profiles_changed()
        return applied

    @classmethod
    def open(cls, config: EngineConfig, encoder: BiEncoder | None = None) -> "Engine":
        data_dir = Path(config.data_dir)
        if config.instance == AUTO_INSTANCE:
            config, lock = claim_instance(config)
        else:
            instance_dir(config).mkdir(parents=True, exist_ok=True)
            lock = lock_data_dir(instance_dir(config))
        try:
            layout = read_layout(data_dir)
            if encoder is None:
                # A reindexed directory names its encoder; an explicit HYBRIDREC_ENCODER wins.
                encoder = BiEncoder(config.encoder_path or layout.encoder, device=config.device)
            record = open_event_log(config.database_url, data_dir)
            try:
                return cls(config, open_store(config), record, encoder, layout, lock)
            except BaseException:
                record.close()
                raise
        except BaseException:
            lock.close()
            raise

    def wire(self, layout: Layout, encoder: BiEncoder, index: CoOccurrenceIndex | None = None,
             scratch: bool = False) -> tuple[Catalogue, Profiles, Recommender]:
        """Catalogue, profiles and recommender over a layout's collections (created if missing),
        fused with the layout's weights where it has its own; ``index``: another co-occurrence
        index than the log's (a trainer's replay of an earlier moment of the log); ``scratch``:
        collections a trainer writes and drops, kept out of the system of record (every instance
        would follow them there)."""
        serving = index is None and not scratch  # a trainer's replay keeps its own stale set
        index = self.index if index is None else index
        catalogue = Catalogue(self.store, encoder, self.bm25, collection=layout.items,
                              record=self.log if serving else None)
        profiles = Profiles(self.store, self.log, catalogue, index, self.config.profiles, collection=layout.users,
                            stale=self.stale_profiles if serving else None, position_key=self._keys[0],
                            compute_missing=self.shared)
        if serving and self.shared:
            catalogue.written = profiles.written = self.own_writes.add
        recommend = self.config.recommend.with_weights(layout.weights)
        return catalogue, profiles, Recommender(catalogue, profiles, index, recommend)

    def switch(self, layout: Layout, encoder: BiEncoder,
               wired: tuple[Catalogue, Profiles, Recommender] | None = None) -> None:
        """Serve another layout (after a reindex). The new objects exist before the swap, so a
        request in flight finishes on the old catalogue and the next one sees the new."""
        catalogue, profiles, recommender = wired or self.wire(layout, encoder)
        space = _item_space(encoder, catalogue)
        ranker = self.recommender.reranker
        if ranker is not None and not self.rerankers.fits(ranker.metadata, space):
            # Its sequence encoder read the old item vectors: replaced before the swap, so no request
            # reads the new vectors with it, by the newest ranker that fits the new items.
            log.error("reranker %s reads a sequence encoder trained over other item vectors; retrain it over %s "
                      "with `hybridrec train reranker`", ranker.version, space)
            ranker = next(filter(None, (self._load_reranker(m["version"], space)
                                        for m in self.rerankers.fitting(space))), None)
            log.info("serving %s", f"reranker {ranker.version}" if ranker else "fused retrieval")
        recommender.reranker = ranker
        recommender.query_suggest = self.recommender.query_suggest
        serving_sequence = self.recommender.sources["sequence"].loaded
        self.encoder, self.catalogue, self.profiles, self.recommender, self.layout = (
            encoder, catalogue, profiles, recommender, layout)
        if serving_sequence is not None:
            # It read the old item vectors: it serves on only if trained over the new ones.
            self.serve_sequence(serving_sequence.version)

    def item_space(self) -> dict:
        """What the item vectors mean: the encoder that wrote them and their collection (a sequence
        encoder reads and answers in exactly this space)."""
        return _item_space(self.encoder, self.catalogue)

    def forget_user(self, user_id: str) -> Forgetting:
        """Forget a user everywhere the engine keeps them (``Profiles.forget``), and say which
        trained model versions learned from them. Idempotent."""
        first_seq = self.log.first_seq(user_id)
        events = sum(self.log.event_counts(user_id).values())
        point = self.profiles.point_id(user_id)  # read before its salt goes
        forgotten = self.profiles.forget(user_id)
        if point is not None:
            # The layout a reindex replaced is kept until the next one: its profile goes too.
            for name in self.store.collections():
                if name != self.profiles.collection and is_layout_collection(name, USERS):
                    self.store.delete(name, [point])
        if forgotten:
            self.drop_forgotten_files()
        return Forgetting(forgotten, events, self.models.learned_from(first_seq) if forgotten else [],
                          self.log.user_key(user_id))

    def reload_reranker(self) -> str | None:
        """Serve the newest accepted reranker that fits today's items and can be loaded (loaded fully
        before the swap, so requests never wait or see a half-loaded model); returns its version, or
        None when there is none. On a shared log, the choice is recorded there and every other
        instance serves it too."""
        return self._serve_newest(self.rerankers.fitting(self.item_space()), self.serve_reranker, SERVING_RERANKER)

    def _serve_newest(self, fitting: list[dict], serve: Callable[[str | None], str | None], key: str) -> str | None:
        """Serve the first of ``fitting`` (newest first) that ``serve`` can load, or none when none
        fits; record the choice on a shared log under ``key``."""
        serving = serve(None) if not fitting else None
        for meta in fitting:  # one that cannot be loaded gives way to the next
            serving = serve(meta["version"])
            if serving == meta["version"]:
                break
        if self.shared:
            self.log.set_meta(key, serving or "")
        return serving

    def _load_reranker(self, version: str, space: dict) -> LoadedReranker | None:
        """Load a reranker version to serve over ``space``, or None (logged) where it cannot be."""
        try:
            return self.rerankers.load(version, device=self.config.device, item_space=space)
        except Exception as err:  # damaged files fail in many ways (a pickle, torch, JSON): none may stop serving
            log.error("reranker %s cannot be served: %s", version, err)
            return None

    def serve_reranker(self, version: str | None) -> str | None:
        """Serve this reranker version (None: fused retrieval alone); returns what serves after."""
        current = self.recommender.reranker
        if version is None:
            self.recommender.reranker = None
            return None
        if current is not None and current.version == version:
            return current.version
        loaded = self._load_reranker(version, self.item_space())
        if loaded is None:  # a model this version cannot read must not take the service down
            log.error("still serving %s", f"reranker {current.version}" if current else "fused retrieval")
            return current.version if current else None
        self.recommender.reranker = loaded
        log.info("serving reranker %s, %s", version, loaded.description)
        return version

    def reload_sequence(self) -> str | None:
        """Serve the newest accepted sequence encoder trained over the items as they are now that
        can be loaded (loaded before the swap); returns its version, or None. On a shared log every
        instance follows."""
        return self._serve_newest(self.sequences.fitting(self.item_space()), self.serve_sequence, SERVING_SEQUENCE)

    def serve_sequence(self, version: str | None) -> str | None:
        """Serve this sequence encoder version (None: none); returns what serves after."""
        source = self.recommender.sources["sequence"]
        current = source.loaded
        if version is None:
            source.loaded = None
            return None
        if current is not None and current.version == version and current.metadata.get("item_space") == self.item_space():
            return version
        try:
            loaded = self.sequences.load(version, self.item_space(), device=self.config.device)
        except Exception as err:
            # As for a reranker: what serves goes on serving, if it reads today's item vectors.
            keep = current if current is not None and current.metadata.get("item_space") == self.item_space() else None
            source.loaded = keep
            log.error("sequence encoder %s cannot be served: %s; %s", version, err,
                      f"still serving {keep.version}" if keep else "the sequence source stays off")
            return keep.version if keep else None
        source.loaded = loaded
        log.info("serving sequence encoder %s (fusion weight %g)", version, loaded.weight)
        return version

    def follow_serving_models(self) -> None:
        """Serve the reranker and sequence encoder another instance chose (shared log only). One
        this machine cannot load (its ``models/`` lacks it) is tried again a minute later, not at
        every turn of the follower; meanwhile what serves goes on serving."""
        for key, serve, current in ((SERVING_RERANKER, self.serve_reranker, self.recommender.reranker),
                                    (SERVING_SEQUENCE, self.serve_sequence,
                                     self.recommender.sources["sequence"].loaded)):
            wanted = self.log.get_meta(key)
            if wanted is None or (wanted or None) == (current.version if current else None):
                continue
            failed = self._unservable.get(key)
            if failed is not None and failed[0] == wanted and time.monotonic() - failed[1] < RETRY_UNSERVABLE_S:
                continue
            if serve(wanted or None) != (wanted or None):
                self._unservable[key] = (wanted, time.monotonic())

    def close(self) -> None:
        self._stop_following.set()
        self.event_writer.close()
        if self.follower is None and not self.catalogue.behind_record:
            self.log.set_meta(self._keys[1], str(self.log.head()))  # one process: its index has every item
        elif self.follower is None:
            log.warning("the item index is behind the system of record (a write to it failed); the next start "
                        "brings it up to the record")
        else:
            self.catch_up()  # the snapshot then includes everything up to the follower's position
        try:
            self.save_index()
        except OSError as err:  # only a slower next start: it reads the log instead
            log.warning("could not save the co-occurrence snapshot %s: %s", self._snapshot, err)
        self.store.close()
        self.log.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def claim_instance(config: EngineConfig, slots: int = 256) -> tuple[EngineConfig, object]:
    """The first instance slot no running process holds (a restarted worker takes its own back)."""
    for k in range(slots):
        candidate = replace(config, instance=f"worker-{k}")
        instance_dir(candidate).mkdir(parents=True, exist_ok=True)
        try:
            return candidate, lock_data_dir(instance_dir(candidate))
        except DataDirectoryInUse:
            continue
    raise DataDirectoryInUse(f"all {slots} instance slots under {config.data_dir}/instances are in use")


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
