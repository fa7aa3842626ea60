"""What controllers share, injected by Litestar: the engine and its parts, the settings, the
explanation generator, the online reindex job, the upload (ingest) jobs and the catalogue's facet
counts. Controllers import from here, never from each other."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
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
from retrieval.storage.vector_store import scroll_all
from service.access import AccessKeys, Caller
from service.settings import Settings


class ReindexState(msgspec.Struct):
    state: str  # idle | running | done | failed
    encoder: str | None = None
    started: float | None = None
    finished: float | None = None
    items: int | None = None
    users: int | None = None
    layout: dict[str, Any] | None = None
    error: str | None = None


class ReindexJob:
    """One online reindex at a time, in a thread of the serving process."""

    def __init__(self) -> None:
        self.state = ReindexState("idle")
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.state.state == "running"

    def start(self, engine: Engine, encoder_path: str) -> ReindexState:
        with self._lock:
            if self.running:
                raise ClientException(status_code=409, detail="a reindex is already running; see GET /v1/admin/reindex")
            self.state = ReindexState("running", encoder=encoder_path, started=time.time())
        threading.Thread(target=self._run, args=(engine, encoder_path), daemon=True, name="reindex").start()
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


def refuse_during_reindex(job: ReindexJob) -> None:
    if job.running:  # a write now would miss the collection being built
        raise ClientException(status_code=409, detail="a reindex is running; retry item writes when "
                                                      "GET /v1/admin/reindex says done", headers={"Retry-After": "30"})


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
                 access_keys: AccessKeys) -> dict[str, Provide]:
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
        "caller": Provide(caller, sync_to_thread=False),
    }


def caller(request: Request) -> Caller | None:
    """Who sent the request (set by the access guard; None on a public route)."""
    return getattr(request.state, "caller", None)
