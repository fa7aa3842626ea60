"""The Litestar application, built by ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio
from litestar import Litestar, Request, Response, Router, get
from litestar.config.compression import CompressionConfig
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from prompts.query_parsing import suggest_constraints
from retrieval.engine import AUTO_INSTANCE, Engine
from retrieval.pipeline.config import source_weights
from retrieval.storage.records import InvalidRecord
from service.access import SECURITY_COMPONENTS, AccessKeys, refuse_cross_origin_writes, require_scope
from service.admission import EngineAdmission, declare_refusals, rate_limits
from service.api.admin import AdminController
from service.api.catalogue import CatalogueController
from service.api.dependencies import UPLOADS_DIR, IngestJobs, ReindexJob, dependencies
from service.api.errors import http_error_handler, internal_error_handler, invalid_record_handler, too_deep_handler
from service.api.evaluation import EvaluationController
from service.api.events import EventController
from service.api.explanations import ExplanationController
from service.api.health import HealthController
from service.api.ingest_jobs import IngestController
from service.api.items import ItemController
from service.api.recommendations import RecommendationController
from service.api.schemas import ClosedStructSchemas, check_request
from service.api.users import UserController
from service.observability import MetricsController, RequestLog, echo_request_id, metrics_config, watch_engine
from service.settings import Settings, SettingsError

log = logging.getLogger("hybridrec.service")
DOCS_PATH = "/docs"
CONSOLE_PATH = "/console"
CONSOLE_DIR = Path(__file__).resolve().parent / "console"  # static files shipped in the package


@get("/", include_in_schema=False, sync_to_thread=False)
def to_console() -> Redirect:
    """The root opens the web console."""
    return Redirect(f"{CONSOLE_PATH}/")


# The console runs only its own files, talks only to its own origin, and is never framed by another
# page (which could steer its clicks).
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _console_with_slash(request: Request) -> Redirect | None:
    """``/console`` itself would load its page with relative links resolved against ``/``: send it to ``/console/``."""
    return Redirect(f"{CONSOLE_PATH}/") if request.scope.get("raw_path") == CONSOLE_PATH.encode() else None


def _console_headers(response: Response) -> Response:
    response.headers.update(CONSOLE_HEADERS)
    return response


def console_router() -> Router:
    """The web console's static files, public: its pages send the user's key to the API themselves."""
    return create_static_files_router(CONSOLE_PATH, directories=[CONSOLE_DIR], html_mode=True, name="console",
                                      include_in_schema=False, before_request=_console_with_slash,
                                      after_request=_console_headers)


def worker_app() -> Litestar:
    """One worker of ``hybridrec serve --workers N``: settings from the environment the command
    set, and the engine of the first free instance slot under the data directory."""
    return create_app(Settings.from_env(), instance=AUTO_INSTANCE)


def create_app(settings: Settings | None = None, engine: Engine | None = None,
               access_keys: AccessKeys | None = None, instance: str | None = None) -> Litestar:
    """Build the app. With ``engine`` given (tests, benchmarks) the caller owns it; otherwise the
    app opens one for ``settings.data_dir`` at start-up (as ``instance``, see ``EngineConfig``) and
    closes it at shutdown. The API keys are ``access_keys`` or those of ``settings.data_dir``."""
    settings = settings or Settings.from_env()
    # HYBRIDREC_LOG_LEVEL governs the service's own loggers (the access log included), not only uvicorn's.
    logging.getLogger("hybridrec").setLevel("DEBUG" if settings.log_level == "trace" else settings.log_level.upper())
    reindex_job = ReindexJob()
    ingest_jobs = IngestJobs(Path(settings.data_dir) / UPLOADS_DIR)
    admission = EngineAdmission(settings.engine_threads, settings.engine_queue)
    keys = access_keys or AccessKeys(settings.data_dir, settings.database_url)
    if conflicts := settings.conflicts():  # settings made in code; those read are checked when read
        raise SettingsError.of(conflicts)
    generator = settings.explanation_generator()  # a bad back-end fails at start, not per request
    wanted = max(source_weights(settings.recommend.weights)["interest"],
                 settings.recommend.request_weights.get("preferences", {}).get("interest", 0.0))
    if "interest" not in settings.recommend.sources and wanted > 0:
        # A source list written before the interest source was one leaves it out without saying so.
        log.warning("recommend.sources leaves out \"interest\": requests with stated preferences alone fall back "
                    "to popularity; add \"interest\" to recommend.sources, or set recommend.weights.interest = 0 "
                    "to mean it")

    def suggest(query: str, brands: list[str], categories: list[str]) -> dict:
        return suggest_constraints(query, generator, brands, categories)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        owned = engine is None
        app.state.engine = engine or Engine.open(replace(settings.engine_config(), instance=instance))
        app.state.engine.warm_neighbours()
        ingest_jobs.resume(app.state.engine.catalogue)  # uploads a killed process was ingesting
        if settings.query_parser == "model":
            app.state.engine.recommender.query_suggest = suggest
        watch_engine(lambda: app.state.engine, lambda: reindex_job.state)
        admission.bound_threads()
        try:
            yield
        finally:
            if owned:
                app.state.engine.close()
            if access_keys is None:  # opened here, so closed here
                keys.close()

    async def follow_shared_log(request: Request) -> None:
        """Before an API request, apply what other instances wrote (read-your-writes across them)."""
        engine_now = request.app.state.engine
        if engine_now.follower is not None and "scope" in request.route_handler.opt:
            await anyio.to_thread.run_sync(engine_now.catch_up)

    controllers = [ItemController, CatalogueController, IngestController, EventController, UserController, RecommendationController,
                   ExplanationController, HealthController, AdminController, EvaluationController, MetricsController]
    declare_refusals(controllers)
    return Litestar(
        route_handlers=[*controllers, console_router(), to_console],
        dependencies=dependencies(settings, generator, reindex_job, keys, ingest_jobs),
        guards=[refuse_cross_origin_writes, require_scope(keys), check_request],
        plugins=[ClosedStructSchemas()],
        exception_handlers={InvalidRecord: invalid_record_handler, HTTPException: http_error_handler,
                            RecursionError: too_deep_handler, Exception: internal_error_handler},
        request_max_body_size=settings.max_body_bytes,
        # The console's files go out gzipped (a third of their size); API answers stay as they are.
        compression_config=CompressionConfig(backend="gzip", exclude=["^/v1/", "^/docs", "^/metrics", "^/health", "^/ready"]),
        before_send=[echo_request_id],
        before_request=follow_shared_log,
        middleware=[RequestLog(), metrics_config().middleware,
                    # Each worker counts its own requests: together they allow the configured rate.
                    *rate_limits(-(-settings.read_rate_limit // settings.workers),
                                 -(-settings.write_rate_limit // settings.workers), keys),
                    admission],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="hybridrec", version="0.1.0", path=DOCS_PATH, render_plugins=[SwaggerRenderPlugin()],
            description="Hybrid recommendations: text + behaviour in one vector space, grounded and cold-start ready. "
                        "Once an API key exists, every /v1 route needs one with its scope (read, write or admin).",
            components=SECURITY_COMPONENTS,
        ),
    )
