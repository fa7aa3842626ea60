"""What controllers share, injected by Litestar: the engine and its parts, the settings, the
explanation generator, the online reindex job, the upload (ingest) jobs and the catalogue's facet
counts. Controllers import from here, never from each other."""

from __future__ import annotations

import fcntl
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ClientException

from prompts import Generator
from retrieval.engine import Engine
from retrieval.state.catalogue import Catalogue
from retrieval.state.facets import Facets
from retrieval.storage.files import write_atomically
from retrieval.storage.vector_store import scroll_all
from service.access import AccessKeys, Caller
from service.ingest import FatalIngestError, IngestSummary, ingest_file
from service.observability import ITEMS_WRITTEN
from service.settings import Settings

log = logging.getLogger("hybridrec.service")


class ReindexState(msgspec.Struct):
    state: str  # idle | running | done | failed
    encoder: str | None = None
    started: float | None = None
    finished: float | None = None
    items: int | None = None
    users: int | None = None
    layout: dict[str, Any] | None = None
    error: str | None = None


WRITES_WAIT_S = 60.0  # how long a reindex's start waits for the writes in flight


class ReindexJob:
    """One online reindex at a time, in a thread of the serving process, and the gate between it and
    the writes it would miss: item writes, an upload's start and a forget run inside ``writing()``,
    which refuses them (409) while a reindex runs, and a reindex starts only once those in flight
    have ended.

    Example::

        with reindex_job.writing():            # 409 while a reindex runs
            engine.catalogue.upsert(rows)      # the catalogue read inside: a reindex may have switched it
        reindex_job.start(engine, path, may_start=refuse_while_uploading)
    """

    def __init__(self) -> None:
        self.state = ReindexState("idle")
        self._gate = threading.Condition()
        self._writes = 0  # writes in flight inside writing()

    @property
    def running(self) -> bool:
        return self.state.state == "running"

    @contextmanager
    def writing(self, then: str = "retry item writes") -> Iterator[None]:
        """Run a write a reindex would miss; 409 while one runs (``then``: what to do once it is done)."""
        with self._gate:
            if self.running:  # a write now would miss the collections being built
                raise ClientException(status_code=409, detail=f"a reindex is running; {then} once GET "
                                                              "/v1/admin/reindex no longer says running",
                                      headers={"Retry-After": "30"})
            self._writes += 1
        try:
            yield
        finally:
            with self._gate:
                self._writes -= 1
                self._gate.notify_all()

    def start(self, engine: Engine, encoder_path: str, may_start: Callable[[], None] = lambda: None) -> ReindexState:
        """Start the reindex once the writes in flight have ended (new ones are refused from now);
        ``may_start`` raises to refuse it, checked after they ended (an upload one of them started)."""
        with self._gate:
            if self.running:
                raise ClientException(status_code=409, detail="a reindex is already running; see GET /v1/admin/reindex")
            before, self.state = self.state, ReindexState("running", encoder=encoder_path, started=time.time())
            try:
                if not self._gate.wait_for(lambda: self._writes == 0, timeout=WRITES_WAIT_S):
                    raise ClientException(status_code=409, headers={"Retry-After": "30"}, detail=(
                        f"{self._writes} item write(s) did not end within {WRITES_WAIT_S:g} s; the reindex did not "
                        "start: start it again later"))
                may_start()
                threading.Thread(target=self._run, args=(engine, encoder_path), daemon=True, name="reindex").start()
            except BaseException:
                self.state = before
                raise
        return self.state

    def _run(self, engine: Engine, encoder_path: str) -> None:
        from encoders import BiEncoder
        from retrieval.reindex import reindex

        try:
            report = reindex(engine, BiEncoder(encoder_path, device=engine.config.device), encoder_path)
            self.state = ReindexState("done", encoder_path, self.state.started, time.time(), report.items,
                                      report.users, asdict(report.layout))
        except Exception as err:  # the old layout keeps serving; say why it failed
            self.state = ReindexState("failed", encoder_path, self.state.started, time.time(), error=str(err))


class RejectedRow(msgspec.Struct):
    """A row of an uploaded file that was not written: its line in the file, its id if it has one,
    the field at fault (None: the line itself, e.g. not JSON) and why."""

    line: int
    id: str | None
    field: str | None
    reason: str


class IngestState(msgspec.Struct):
    """An upload's ingest job. ``lines_done`` grows batch by batch up to ``lines_total``;
    ``rejected`` lists the first ``MAX_LISTED_REJECTS`` rejected rows (``rejected_count`` counts
    them all); ``error`` says why a job failed (a row never fails a job, only an unusable file)."""

    id: str
    name: str
    state: str  # running | done | failed
    lines_total: int
    lines_done: int = 0
    upserted: int = 0
    rejected_count: int = 0
    rejected: list[RejectedRow] = []
    error: str | None = None
    format: str = "jsonl"
    started: float | None = None
    finished: float | None = None


MAX_LISTED_REJECTS = 200
UPLOADS_DIR = "uploads"


def count_file_lines(body: bytes) -> int:
    """Lines in a file, the last one counted without its line break too."""
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


class IngestJobs:
    """Uploaded catalogue files, each loaded by ``service.ingest.ingest_file`` (the job behind
    ``hybridrec ingest``: batch by batch, with its rejects file and checkpoint) in a thread of a
    serving process; one at a time across the data directory's workers. Under ``folder``
    (``<data_dir>/uploads``) each job keeps its file ``<job id>.<format>``, its rejected rows
    (``.rejects.jsonl``) and its state (``.job.json``), all on disk before the upload is answered:
    a job whose process was killed goes on where it stopped when a process starts (``resume``),
    and any worker answers for any job.

    Example::

        jobs = IngestJobs(data_dir / "uploads")
        jobs.resume(engine.catalogue)          # at start: jobs a killed process left running
        job = jobs.start(engine.catalogue, body, "jsonl", "catalogue.jsonl")
        jobs.get(job.id).state                 # running, then done or failed
    """

    def __init__(self, folder: Path, keep: int = 100) -> None:
        self.folder = Path(folder)
        self._jobs: OrderedDict[str, IngestState] = OrderedDict()  # those this process runs or ran
        self._locks: dict[str, Any] = {}  # job id -> its open lock file, held while this process runs it
        self._lock = threading.Lock()
        self._keep = keep

    def _path(self, job_id: str, fmt: str) -> Path:
        return self.folder / f"{job_id}.{fmt}"

    def _state_path(self, job_id: str) -> Path | None:
        found = sorted(self.folder.glob(f"{job_id}.*.job.json"))
        return found[0] if found else None

    def _claim(self, job_id: str) -> bool:
        """Hold the job's lock file (only one process runs a job); False if another process holds it."""
        handle = open(self.folder / f"{job_id}.lock", "a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._locks[job_id] = handle
        return True

    def _release(self, job_id: str) -> None:
        handle = self._locks.pop(job_id, None)
        if handle is not None:
            handle.close()

    def _save(self, job: IngestState, durable: bool = False) -> None:
        path = self.folder / f"{job.id}.{job.format}.job.json"
        write_atomically(path, lambda fh: fh.write(msgspec.json.encode(msgspec.structs.replace(job, rejected=[]))),
                         durable)

    def _on_disk(self) -> list[IngestState]:
        states = []
        for path in sorted(self.folder.glob("*.job.json")):
            try:
                states.append(msgspec.json.decode(path.read_bytes(), type=IngestState))
            except (OSError, msgspec.DecodeError) as err:
                log.error("ingest job state %s is unreadable (%s); that job is not shown", path, err)
        return states

    @property
    def running(self) -> bool:
        """Whether a job runs, here or in another worker of the data directory."""
        if any(job.state == "running" for job in self._jobs.values()):
            return True
        for job in self._on_disk():
            if job.state == "running" and job.id not in self._locks:
                if self._claim(job.id):  # nobody runs it: left by a killed process, resumed at its start
                    self._release(job.id)
                else:
                    return True
        return False

    def get(self, job_id: str) -> IngestState | None:
        job = self._jobs.get(job_id)
        if job is None:  # another worker's, or from before this process
            path = self._state_path(job_id)
            if path is None:
                return None
            job = msgspec.json.decode(path.read_bytes(), type=IngestState)
        rejects = self.rejects_path(self._path(job.id, job.format))
        return msgspec.structs.replace(job, rejected=read_rejects(rejects))

    def start(self, catalogue: Catalogue, body: bytes, fmt: str, name: str) -> IngestState:
        # A job whose process died after this one started (another worker's) goes first.
        self.resume(catalogue)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.running:
                raise ClientException(status_code=409, detail="an upload is already being ingested; wait until "
                                                              "GET /v1/ingest/{job_id} says done")
            job_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(4)
            path = self._path(job_id, fmt)
            write_atomically(path, lambda fh: fh.write(body))  # accepted: on disk before the answer says so
            job = IngestState(job_id, name, "running", count_file_lines(body), format=fmt, started=time.time())
            self._save(job, durable=True)
            self._claim(job_id)
            self._remember(job)
        self._run_in_thread(catalogue, job)
        return job

    def resume(self, catalogue: Catalogue) -> list[str]:
        """Go on with the jobs a killed process left running (each from its checkpoint), one after
        another, in a thread; returns their ids. A job another worker runs is left to it. At start,
        and before each new upload."""
        if not self.folder.is_dir():
            return []
        with self._lock:
            left = [job for job in self._on_disk() if job.state == "running" and self._claim(job.id)]
            for job in left:
                self._remember(job)
        if left:
            log.warning("resuming %d ingest job(s) a stopped process left running: %s", len(left),
                        ", ".join(job.id for job in left))
            threading.Thread(target=lambda: [self._run(catalogue, job) for job in left], daemon=True,
                             name="ingest resumed").start()
        return [job.id for job in left]

    def _remember(self, job: IngestState) -> None:
        self._jobs[job.id] = job
        while len(self._jobs) > self._keep:
            oldest = next((k for k, j in self._jobs.items() if j.state != "running"), None)
            if oldest is None:
                break
            del self._jobs[oldest]

    def _run_in_thread(self, catalogue: Catalogue, job: IngestState) -> None:
        threading.Thread(target=self._run, args=(catalogue, job), daemon=True, name=f"ingest {job.id}").start()

    @staticmethod
    def rejects_path(path: Path) -> Path:
        return path.with_name(path.name + ".rejects.jsonl")

    def _run(self, catalogue: Catalogue, job: IngestState) -> None:
        path = self._path(job.id, job.format)

        def progress(line: int, summary: IngestSummary) -> None:
            job.lines_done, job.upserted, job.rejected_count = min(line, job.lines_total), summary.upserted, summary.rejected
            self._save(job)

        rejects = self.rejects_path(path)
        try:
            try:
                summary = ingest_file(catalogue, path, job.format, rejects=rejects,
                                      checkpoint_dir=path.parent / ".checkpoints", progress=False, on_batch=progress)
            except FatalIngestError as err:
                job.error, job.state, job.finished = str(err), "failed", time.time()
                return
            except Exception as err:  # the catalogue keeps what was written; the job says why it stopped
                log.error("ingest job %s failed", job.id, exc_info=err)
                job.error = (f"the job stopped after line {job.lines_done} ({type(err).__name__}); the rows before "
                             "it are written, and the service's log says what went wrong")
                job.state, job.finished = "failed", time.time()
                return
            ITEMS_WRITTEN.labels("upserted").inc(summary.upserted - summary.upserted_before)
            ITEMS_WRITTEN.labels("rejected").inc(summary.rejected)
            job.lines_done, job.upserted, job.rejected_count = job.lines_total, summary.upserted, summary.rejected
            job.state, job.finished = "done", time.time()
        finally:
            self._save(job, durable=True)
            self._release(job.id)


def read_rejects(path: Path, limit: int = MAX_LISTED_REJECTS) -> list[RejectedRow]:
    """The first ``limit`` rows of an ingest job's rejects file (none if it has none)."""
    out: list[RejectedRow] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if len(out) >= limit:
                    break
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a batch being written: its line is not whole yet
                    break
                out.append(RejectedRow(entry["line"], entry.get("id"), entry.get("field"), entry.get("error") or ""))
    except FileNotFoundError:
        pass
    return out


class FacetCount(msgspec.Struct):
    name: str
    items: int


class PriceRange(msgspec.Struct):
    min: float | None
    max: float | None


class CatalogueFacets(msgspec.Struct):
    """The catalogue's categories and brands with how many items each has (most first), its price
    range, and its size."""

    categories: list[FacetCount]
    brands: list[FacetCount]
    price: PriceRange
    items: int


class FacetCounts:
    """``CatalogueFacets``, read with one scroll of the catalogue and kept until it changes. A change
    is seen without anyone reporting it: every write gives the catalogue a new ``Facets`` object (copy
    on write), a delete changes its count, and a reindex's switch a new catalogue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Catalogue, Facets, int] | None = None
        self._counts: CatalogueFacets | None = None

    def get(self, catalogue: Catalogue) -> CatalogueFacets:
        with self._lock:  # one scroll at a time; the others wait for its answer
            key = (catalogue, catalogue.facets(), catalogue.count())
            old = self._key
            if self._counts is None or old is None or old[0] is not key[0] or old[1] is not key[1] or old[2] != key[2]:
                self._counts, self._key = self._read(catalogue, key[1]), key  # the key read before the scroll
            return self._counts

    @staticmethod
    def _read(catalogue: Catalogue, names: Facets) -> CatalogueFacets:
        categories: dict[str, int] = {}
        brands: dict[str, int] = {}
        prices: list[float] = []
        n = 0
        for page in scroll_all(catalogue.store, catalogue.collection, batch=1024):
            for point in page:
                n += 1
                p = point.payload
                if p.get("brand"):
                    brands[p["brand"].lower()] = brands.get(p["brand"].lower(), 0) + 1
                for key in {c.lower() for c in p.get("categories") or ()}:
                    categories[key] = categories.get(key, 0) + 1
                if p.get("price") is not None:
                    prices.append(float(p["price"]))

        def ranked(counts: dict[str, int], known: dict[str, str]) -> list[FacetCount]:
            named = [FacetCount(known.get(key, key), count) for key, count in counts.items()]
            return sorted(named, key=lambda f: (-f.items, f.name.lower()))

        return CatalogueFacets(ranked(categories, names.categories), ranked(brands, names.brands),
                               PriceRange(min(prices) if prices else None, max(prices) if prices else None), n)


def dependencies(settings: Settings, generator: Generator, reindex_job: ReindexJob,
                 access_keys: AccessKeys, ingest_jobs: IngestJobs) -> dict[str, Provide]:
    """The app's dependency map: the engine (opened by the app's lifespan) and its parts, read at
    request time so that a reindex's switch is seen by the next request."""

    def engine_part(attribute: str | None):
        def dependency(state: State):
            return state.engine if attribute is None else getattr(state.engine, attribute)

        return Provide(dependency, sync_to_thread=False)

    facet_counts = FacetCounts()
    return {
        "engine": engine_part(None),
        "catalogue": engine_part("catalogue"),
        "profiles": engine_part("profiles"),
        "recommender": engine_part("recommender"),
        "event_writer": engine_part("event_writer"),
        "settings": Provide(lambda: settings, sync_to_thread=False),
        "reindex_job": Provide(lambda: reindex_job, sync_to_thread=False),
        "explanation_generator": Provide(lambda: generator, sync_to_thread=False),
        "access_keys": Provide(lambda: access_keys, sync_to_thread=False),
        "facet_counts": Provide(lambda: facet_counts, sync_to_thread=False),
        "ingest_jobs": Provide(lambda: ingest_jobs, sync_to_thread=False),
        "caller": Provide(caller, sync_to_thread=False),
    }


def caller(request: Request) -> Caller | None:
    """Who sent the request (set by the access guard; None on a public route)."""
    return getattr(request.state, "caller", None)
