"""What an operator sees of each request: an ``X-Request-ID`` (the client's, or a new one) echoed in
the response and in every error body, one JSON log line per request (request id, method, route,
status, latency, key id: never the key), and Prometheus metrics: request counts and latency per
route and status, the recommend pipeline's step timings, events accepted and rejected, the
catalogue's size and the models that serve.

Example log line::

    {"request_id": "4f0c...", "method": "POST", "route": "/v1/recommendations", "status": 200,
     "latency_ms": 12.4, "key_id": "a1b2c3d4e5f6"}
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from litestar import Response, get
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.access import ADMIN, SECURITY

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a client's id is echoed only if it is tame
access_log = logging.getLogger("hybridrec.access")
log = logging.getLogger("hybridrec.service")

# Engine-level metrics (the HTTP ones come from Litestar's Prometheus middleware). Defined once per
# process: prometheus_client's default registry refuses the same name twice.
PIPELINE_STEP_SECONDS = Histogram("hybridrec_recommend_step_seconds", "Time in each step of the recommend pipeline",
                                  ["step"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
EVENTS = Counter("hybridrec_events_total", "Events posted to /v1/events", ["type", "outcome"])
ITEMS_WRITTEN = Counter("hybridrec_items_written_total", "Items written or rejected through the API", ["outcome"])


def metrics_config() -> PrometheusConfig:
    """Request counts and latency per route template and status (``group_path``: ``/v1/items/{id}``,
    not one series per item)."""
    return PrometheusConfig(app_name="hybridrec", prefix="hybridrec", group_path=True, exclude=["/metrics"])


def assign_request_id(scope: Scope) -> str:
    """The request's id: the client's ``X-Request-ID`` if it is tame, else a new one; kept in the
    request's state, where error bodies and the response header read it."""
    given = dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
    request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


def log_request(scope: Scope, request_id: str, status: int, started: float | None) -> None:
    """The access log's one JSON line for a request (route templates only: never a user id from a path)."""
    caller = scope.get("state", {}).get("caller")
    access_log.info(json.dumps({
        "request_id": request_id, "method": scope.get("method"), "route": scope.get("path_template"),
        "status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "key_id": caller.key_id if caller is not None else None,
    }))


class RequestLog(ASGIMiddleware):
    """Request id in, request id out, one JSON line per request."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request_id = assign_request_id(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), request_id.encode())]
            await send(message)

        try:
            await next_app(scope, receive, send_with_id)
        except Exception as exc:  # answered by the exception handlers outside this middleware
            status = getattr(exc, "status_code", 500)
            raise
        finally:
            log_request(scope, request_id, status, started)


async def echo_request_id(message: Message, scope: Scope) -> None:
    """Litestar ``before_send`` hook: an answer made by the exception handlers, outside the
    middleware (a 429 from the rate limits, a 503 from admission), gets the request id too."""
    if message["type"] == "http.response.start":
        request_id = scope.get("state", {}).get("request_id")
        headers = message.setdefault("headers", [])
        if request_id and not any(name.lower() == REQUEST_ID_HEADER.encode() for name, _ in headers):
            message["headers"] = [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())]


PROBE_SECONDS = 2.0


class NotAnswering(Exception):
    """A probe's read did not answer in time."""


class Probes:
    """Reads that health, readiness and metrics must answer within seconds while what they read may
    not (a database gone: its pool waits 30 s for a connection). Each read runs in a daemon thread;
    each part (a name) has at most one read under way, which later probes of it wait on too, so a
    stuck part holds one thread and never delays another part.

    Example::

        answers = PROBES.read({"log": engine.log.count, "store": engine.catalogue.count})
        answers["log"]       # the count, or the exception (NotAnswering after PROBE_SECONDS)
    """

    def __init__(self) -> None:
        self._under_way: dict[str, Future] = {}
        self._lock = threading.Lock()

    def _start(self, name: str, read: Callable[[], Any]) -> Future:
        with self._lock:
            future = self._under_way.get(name)
            if future is not None and not future.done():
                return future
            future = self._under_way[name] = Future()

        def run() -> None:
            try:
                future.set_result(read())
            except BaseException as err:  # handed to whoever waits
                future.set_exception(err)

        threading.Thread(target=run, daemon=True, name=f"probe {name}").start()
        return future

    def read(self, reads: dict[str, Callable[[], Any]], seconds: float = PROBE_SECONDS) -> dict[str, Any]:
        """Every read's answer, or its exception, all within ``seconds`` together."""
        futures = {name: self._start(name, read) for name, read in reads.items()}
        deadline = time.monotonic() + seconds
        answers: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                answers[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FuturesTimeout:
                answers[name] = NotAnswering(f"no answer within {seconds:g} s")
            except Exception as err:
                answers[name] = err
        return answers


PROBES = Probes()


class EngineState(Collector):
    """Gauges read at scrape time from the engine that serves now (a reindex swaps the catalogue, a
    reload the reranker): catalogue size, events logged, profile lag, the serving models."""

    current: Callable[[], Any] | None = None
    reindex: Callable[[], Any] | None = None

    def collect(self):
        engine = self.current() if self.current is not None else None
        if engine is None:
            return
        # A part that does not answer leaves its gauge out (and says so in the log); the rest still come.
        gauges = {"hybridrec_catalogue_items": ("Items in the catalogue that serves", "catalogue.count",
                                                engine.catalogue.count),
                  "hybridrec_events_logged": ("Events in the event log", "log.count", engine.log.count),
                  "hybridrec_profile_lag_events": ("Logged events this process has not taken in", "profiles.lag",
                                                   engine.profiles.lag)}
        answers = PROBES.read({read_name: read for _, read_name, read in gauges.values()})
        for name, (documentation, read_name, _) in gauges.items():
            if isinstance(answers[read_name], Exception):
                log.warning("metric %s left out: %s", name, answers[read_name])
            else:
                yield GaugeMetricFamily(name, documentation, value=answers[read_name])
        yield GaugeMetricFamily("hybridrec_events_waiting", "Events accepted by the API, waiting for their commit",
                                value=engine.event_writer.pending_rows)
        yield GaugeMetricFamily("hybridrec_profiles_stale", "Users whose stored profile is behind the log (read "
                                "from the log until written)", value=len(engine.stale_profiles))
        if self.reindex is not None:
            state = GaugeMetricFamily("hybridrec_reindex_state", "The online reindex's state (value 1)",
                                      labels=["state"])
            state.add_metric([self.reindex().state], 1)
            yield state
        models = GaugeMetricFamily("hybridrec_serving_model_info", "The models that serve (value 1)",
                                   labels=["kind", "version"])
        models.add_metric(["encoder", engine.encoder.name], 1)
        reranker = engine.recommender.reranker
        models.add_metric(["reranker", reranker.version if reranker else "none"], 1)
        yield models


ENGINE_STATE = EngineState()
REGISTRY.register(ENGINE_STATE)


def watch_engine(current: Callable[[], Any], reindex: Callable[[], Any] | None = None) -> None:
    """Export the state of the engine ``current()`` returns (the app's, read at each scrape), and
    of the online reindex job ``reindex()`` returns."""
    ENGINE_STATE.current = current
    ENGINE_STATE.reindex = reindex


def forget_dead_workers(folder: str | None = None) -> list[int]:
    """Drop the live gauges (requests in progress) that workers no longer running left in the
    multiprocess folder: a killed worker's stay summed in for good otherwise. Called at each scrape
    (a glob and a signal-0 per worker file); returns the pids cleared."""
    folder = folder or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return []
    dead = set()
    for path in Path(folder).glob("gauge_live*_*.db"):
        tail = path.stem.rsplit("_", 1)[-1]  # gauge_livesum_<pid>
        if not tail.isdigit() or int(tail) == os.getpid():
            continue
        pid = int(tail)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # alive, another user's
            pass
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(dead)


class MetricsController(PrometheusController):
    """``GET /metrics`` in Prometheus' text format; it needs the admin scope once keys exist."""

    path = "/metrics"
    opt = {"scope": ADMIN}
    security = SECURITY

    @get(media_type=CONTENT_TYPE_LATEST, summary="Prometheus metrics (text exposition format)")
    async def get(self) -> Response:
        # Reading the engine's gauges may wait on the database: in a thread of its own, so that it
        # holds neither the event loop nor an engine thread (a busy service is what metrics must show).
        global _METRICS_THREADS
        if _METRICS_THREADS is None:
            _METRICS_THREADS = anyio.CapacityLimiter(2)
        return await anyio.to_thread.run_sync(_exposition, limiter=_METRICS_THREADS)


_METRICS_THREADS: anyio.CapacityLimiter | None = None


def _exposition() -> Response:
    """Every metric in Prometheus' text format."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers of one `serve --workers N`: every worker's counters and histograms, summed from
        # their files, plus the engine gauges as the answering worker reads them.
        forget_dead_workers()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(ENGINE_STATE)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
