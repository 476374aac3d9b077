"""aiohttp middleware around every view: correlation id, trace span, metrics, JSON errors."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from opentelemetry.trace import Status, StatusCode

from app.domain.correlation import (
    HTTP_HEADERS,
    InvalidCorrelationId,
    log_context,
    new_correlation_id,
    validate_correlation_id,
)
from app.observability import metrics
from app.observability.tracing import request_span
from app.aiohttp_compat.request_handler import arrived_at
from app.settings import settings
from web import auth
from web.auth import api_keys

log = logging.getLogger(__name__)
RESPONSE_HEADER = "X-Correlation-ID"

# An API request that waited longer than this in the worker before its handler ran is shed
# (module-level so that tests can lower it).
MAX_REQUEST_WAIT_SECONDS = settings.max_request_wait_seconds
# A shed request: the worker is at capacity now, which usually passes quickly.
OVERLOADED_RETRY_AFTER_SECONDS = "1"
# At most one log line per this many seconds about shed requests (one per request would add to the load).
SHED_LOG_INTERVAL_SECONDS = 10.0

# Limits on what a client may send (aiohttp answers 400/413 beyond them).
MAX_BODY_BYTES = 64 * 1024
# No endpoint reads a request body (the timestamp is in the path): one is ignored, but
# bounded, Content-Length or chunked alike: over MAX_BODY_BYTES 413, not ended within this
# many seconds 408, and in both cases the handler does not run (see _body_refused).
BODY_READ_TIMEOUT_SECONDS = 10.0
MAX_LINE_BYTES = 4096  # request line, so the URL too
MAX_HEADER_BYTES = 8190


def json_error(status: int, error: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def _requested_correlation_id(request: web.Request) -> str | None:
    """The first correlation id header sent; each one sent must be valid, as /openapi.json says."""
    found = None
    for name in HTTP_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            try:
                valid = validate_correlation_id(value.strip())
            except InvalidCorrelationId as exc:
                raise InvalidCorrelationId(f"header {name}: {exc}") from None
            found = found or valid
    return found


class ShedLog:
    """Counts shed requests; logs a warning at most once per SHED_LOG_INTERVAL_SECONDS."""

    def __init__(self) -> None:
        self.unlogged: dict[str, int] = {}
        self.logged_at = float("-inf")

    def shed(self, reason: str, detail: str) -> None:
        self.unlogged[reason] = self.unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.logged_at >= SHED_LOG_INTERVAL_SECONDS:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(self.unlogged.items()))
            log.warning("Shedding requests (answered 503 overloaded): %s since the last such line; last: %s",
                        counts, detail)
            self.unlogged, self.logged_at = {}, now


shed_log = ShedLog()


def overloaded(request: web.Request, reason: str, detail: str) -> web.Response:
    """503 + Retry-After, at once: the request is not handled (for a POST: nothing is published)."""
    metrics.http_requests_shed.labels(_route(request), _method_label(request.method), reason).inc()
    shed_log.shed(reason, detail)
    return json_error(503, "overloaded", "the service is at capacity; the request was not handled, retry later",
                      headers={"Retry-After": OVERLOADED_RETRY_AFTER_SECONDS})


# When each connection's latest request data was read: the time a request has waited in
# this worker is measured from there (app.aiohttp_compat.request_handler.record_arrivals).


def waited(request: web.Request) -> float:
    """Seconds since this worker read the request (0 when unknown)."""
    arrived = arrived_at(request.protocol)
    return 0.0 if arrived is None else time.monotonic() - arrived


def _sheddable(request: web.Request) -> bool:
    """API requests may be shed; probes, /metrics and /openapi.json never are."""
    return request.path.startswith("/api/") or request.path == "/app"


def _method_not_allowed(request: web.Request, allowed: Iterable[str]) -> web.Response:
    # Faust registers HEAD for every view, but only a view with a GET answers it.
    methods = sorted(set(allowed) if "GET" in allowed else set(allowed) - {"HEAD"})
    return json_error(405, "method_not_allowed",
                      f"{request.method} {request.path[:200]}: method not allowed; allowed: {', '.join(methods)}",
                      headers={"Allow": ", ".join(methods)})


# Methods reported as themselves in metrics; any other token a client sends is "other",
# so that made-up methods cannot grow the metrics' label sets.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


def _method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def _route(request: web.Request) -> str:
    """The URL pattern, never the raw path (labels must stay low-cardinality)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _body_refused(request: web.Request) -> web.Response | None:
    """Read and drop the request body, the same way whether it has a Content-Length or is chunked.

    No endpoint reads a body (the timestamp is in the path), so one is ignored, but only once it
    has ended, within MAX_BODY_BYTES and BODY_READ_TIMEOUT_SECONDS: the handler (so the publish)
    never runs while a client is still sending. None when the body may be ignored.
    """
    close = {"Connection": "close"}  # aiohttp still drains what is sent for a while, so the client reads this
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return json_error(413, "request_too_large", f"the request body (Content-Length {request.content_length}) "
                          f"is over the {MAX_BODY_BYTES} bytes allowed", headers=close)
    if not request.body_exists:
        return None
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_SECONDS):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > MAX_BODY_BYTES:  # only a chunked body gets here: aiohttp stops at Content-Length
                    return json_error(413, "request_too_large", f"the chunked request body is over the "
                                      f"{MAX_BODY_BYTES} bytes allowed", headers=close)
    except TimeoutError:
        framing = "chunked" if request.content_length is None else f"Content-Length {request.content_length}"
        received = f"{size} byte{'' if size == 1 else 's'} received"
        return json_error(408, "request_timeout", f"the request body ({framing}) did not end within "
                          f"{BODY_READ_TIMEOUT_SECONDS:g} s ({received})", headers=close)
    return None


async def _handle(request: web.Request, handler) -> web.StreamResponse:
    if _sheddable(request) and (delay := waited(request)) > MAX_REQUEST_WAIT_SECONDS:
        return overloaded(request, "waited", f"{request.method} {request.path[:100]} waited {delay * 1000:.0f} ms "
                                             f"(MAX_REQUEST_WAIT_SECONDS={MAX_REQUEST_WAIT_SECONDS:g})")
    if refused := await _body_refused(request):
        return refused
    if api_keys.keys and auth.needs_key(request.method, request.path, settings.auth_protect):
        if not auth.is_valid(auth.presented_key(request.headers), api_keys.keys):
            return json_error(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)",
                              headers={"WWW-Authenticate": "Bearer"})
    resource = request.match_info.route.resource
    if request.method == "HEAD" and resource is not None and all(r.method != "GET" for r in resource):
        return _method_not_allowed(request, {r.method for r in resource})
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return _method_not_allowed(request, exc.allowed_methods)
    except web.HTTPException as exc:  # aiohttp's own 404/413...: same JSON shape
        return json_error(exc.status, exc.reason.lower().replace(" ", "_"),
                          f"{request.method} {request.path[:200]}: {exc.reason}")
    except Exception:
        log.exception("Unhandled error in %s %s", request.method, request.path[:200])
        return json_error(500, "internal_error", "unexpected error; see the worker log")


@web.middleware
async def observe_requests(request: web.Request, handler) -> web.StreamResponse:
    """Take or make the request's correlation id, trace and time the request, echo the id."""
    started = time.monotonic()
    route = _route(request)
    try:
        corr_id = _requested_correlation_id(request) or new_correlation_id()
    except InvalidCorrelationId as exc:
        corr_id = new_correlation_id()
        response = json_error(400, "invalid_correlation_id", str(exc))
    else:
        with log_context(corr_id), request_span(
            f"{request.method} {route}", request.headers,
            lambda: {"http.request.method": request.method, "http.route": route,
                     "url.path": request.path[:200], "correlation_id": corr_id},
        ) as span:
            response = await _handle(request, handler)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
    response.headers[RESPONSE_HEADER] = corr_id
    method = _method_label(request.method)
    metrics.http_requests_by(route, method, response.status).inc()
    metrics.http_request_duration_by(route, method).observe(time.monotonic() - started)
    return response


def parser_error(request: web.BaseRequest, status: int, exc: HttpProcessingError) -> web.Response:
    """The answer to a request aiohttp's HTTP parser refused (it never reached a middleware)."""
    limit = exc.args[1] if isinstance(exc, LineTooLong) and len(exc.args) > 1 else None
    if limit == MAX_LINE_BYTES:
        error, message = "request_line_too_long", f"the request line (method, URL, version) is limited to {limit} bytes"
    elif limit == MAX_HEADER_BYTES:
        # Not the parser's text: it quotes the header, which may hold a credential.
        error, message = "header_too_large", f"each request header (name and value) is limited to {limit} bytes"
    else:
        error, message = "bad_request", "malformed HTTP request: " + " ".join(str(exc.message).split())[:200]
    corr_id = new_correlation_id()
    with log_context(corr_id):
        log.warning("Refused a malformed HTTP request from %s: %s: %s", request.remote, error, message)
    response = json_error(status, error, message, headers={RESPONSE_HEADER: corr_id})
    response.force_close()  # the parser lost track of the stream; aiohttp closes it too
    return response


WEB_APPLICATION_OPTIONS = {
    "client_max_size": MAX_BODY_BYTES,
    "handler_args": {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_HEADER_BYTES},
    "middlewares": [observe_requests],
}
