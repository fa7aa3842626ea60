"""Which requests the service takes on: per-key rate limits for reads and writes (Litestar's own
rate limiting, with ``Retry-After``), and back-pressure for the engine's bounded thread pool (a
503 with ``Retry-After`` when the queue in front of it is full, instead of unbounded latency).

Example::

    app = Litestar(..., middleware=[*rate_limits(20, 5, access_keys), EngineAdmission(threads=8, queue=64)])
"""

from __future__ import annotations

import time

import anyio.to_thread
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
    TooManyRequestsException,
)
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from service.access import READ, WRITE, AccessKeys, presented_key
from service.api.errors import http_error_handler

RETRY_AFTER = "Retry-After"


class _RateLimitWithRetryAfter(RateLimitMiddleware):
    """Litestar's middleware says when the window resets in ``RateLimit-Reset``; clients and proxies
    also read the standard ``Retry-After``."""

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        if len(cache_object.history) >= self.max_requests:
            headers[RETRY_AFTER] = str(max(1, cache_object.reset - int(time.time())))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as refused:
            kind = self.config.store.removeprefix("rate_limit_")
            refused.detail = (f"more than {self.max_requests} {kind} requests per {self.unit} from this key "
                              "(or address); retry after the seconds in Retry-After")
            await answer_refusal(scope, receive, send, refused)


async def answer_refusal(scope: Scope, receive: Receive, send: Send, refused: HTTPException) -> None:
    """Answer a refusal here, as the app's error handler words it, instead of raising it: raised
    from a middleware it would pass the Prometheus middleware around it unanswered, and be counted
    as a 200 taking no time."""
    app = scope["litestar_app"]
    request = app.request_class(scope, receive)
    await http_error_handler(request, refused).to_asgi_response(app=app, request=request)(scope, receive, send)


def client_identity(request: Request, keys: AccessKeys) -> str:
    """Who a limit counts against: an active key (hashed, so the store never holds it), else the
    client address: an invented or revoked key counts against its sender's address, so new ones
    each request cannot dodge the limit, nor use up a real key's budget."""
    digest = keys.recognised(presented_key(request))
    if digest is not None:
        return "key:" + digest[:24]
    return "address:" + (request.client.host if request.client else "unknown")


def _route_scope(request: Request) -> str | None:
    handler = request.scope.get("route_handler")
    return handler.opt.get("scope") if handler is not None else None


def rate_limits(read_per_second: int, write_per_second: int, keys: AccessKeys) -> list[DefineMiddleware]:
    """One limit for read routes and one for write routes, each per key per second (0: none).
    Admin and public routes (health, readiness, metrics, docs) are not limited."""
    out = []
    for scope, per_second in ((READ, read_per_second), (WRITE, write_per_second)):
        if per_second <= 0:
            continue

        def applies(request: Request, scope: str = scope) -> bool:
            return _route_scope(request) == scope

        def identity(request: Request, scope: str = scope) -> str:
            return f"{scope}:{client_identity(request, keys)}"

        config = RateLimitConfig(rate_limit=("second", per_second), check_throttle_handler=applies,
                                 identifier_for_request=identity, middleware_class=_RateLimitWithRetryAfter,
                                 store=f"rate_limit_{scope}")
        out.append(config.middleware)
    return out


def declare_refusals(controllers: list[type]) -> None:
    """Say in the OpenAPI document what a route may answer besides its own results: 401 and 403 on
    every route that needs a scope, 429 where a rate limit applies (read and write routes), 503
    where admission or the event writer may refuse (engine work and event writes)."""
    for controller in controllers:
        for handler in vars(controller).values():
            if not isinstance(handler, HTTPRouteHandler):
                continue
            scope = handler.opt.get("scope")
            raises = list(handler.raises or [])
            if scope:
                raises += [e for e in (NotAuthorizedException, PermissionDeniedException) if e not in raises]
            if scope in (READ, WRITE) and TooManyRequestsException not in raises:
                raises.append(TooManyRequestsException)
            if scope and (handler.sync_to_thread or scope == WRITE) and ServiceUnavailableException not in raises:
                raises.append(ServiceUnavailableException)
            handler.raises = raises


class EngineAdmission(ASGIMiddleware):
    """Bounds the threads that run engine work (every synchronous handler) and the requests that
    may wait for one: past ``threads + queue`` requests in flight, a new one is answered 503 with
    ``Retry-After`` at once, so a burst or a stuck request cannot pile up unbounded latency. Health
    and readiness wait for a thread like the rest but are never refused."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, threads: int, queue: int):
        self.threads = threads
        self.capacity = threads + queue
        self.in_flight = 0

    def bound_threads(self) -> None:
        """Litestar runs synchronous handlers on anyio's default limiter: give it ``threads`` tokens
        (called once at start-up, inside the event loop)."""
        anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        handler = scope.get("route_handler")
        if handler is None or not getattr(handler, "sync_to_thread", False) or "scope" not in handler.opt:
            # Async handlers do not take an engine thread; health and readiness are never refused.
            await next_app(scope, receive, send)
            return
        if self.in_flight >= self.capacity:
            await answer_refusal(scope, receive, send, ServiceUnavailableException(
                detail=f"the service is busy: {self.in_flight} requests are running or waiting for the engine; "
                       "retry after the seconds in Retry-After", headers={RETRY_AFTER: "1"}))
            return
        self.in_flight += 1
        try:
            await next_app(scope, receive, send)
        finally:
            self.in_flight -= 1
