"""aiohttp middleware around every view: correlation id, trace span, metrics, JSON errors."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from app import auth, metrics
from app.correlation import HTTP_HEADERS, InvalidCorrelationId, new_correlation_id, validate_correlation_id
from app.logs import log_context
from app.settings import SettingsError, settings
from app.tracing import tracer

log = logging.getLogger(__name__)
try:
    API_KEYS = auth.load_keys(settings.api_keys, settings.api_keys_file)
except ValueError as exc:
    raise SettingsError(str(exc)) from None
RESPONSE_HEADER = "X-Correlation-ID"

# Limits on what a client may send (aiohttp answers 400/413 beyond them).
MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096  # request line, so the URL too
MAX_HEADER_BYTES = 8190


def json_error(status: int, error: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def _requested_correlation_id(request: web.Request) -> str | None:
    for name in HTTP_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            return validate_correlation_id(value.strip())
    return None


def _route(request: web.Request) -> str:
    """The URL pattern, never the raw path (labels must stay low-cardinality)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def _handle(request: web.Request, handler) -> web.StreamResponse:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return json_error(413, "request_too_large", f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    if API_KEYS and auth.needs_key(request.method, request.path, settings.auth_protect):
        if not auth.is_valid(auth.presented_key(request.headers), API_KEYS):
            return json_error(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)",
                              headers={"WWW-Authenticate": "Bearer"})
    try:
        return await handler(request)
    except web.HTTPException as exc:  # aiohttp's own 404/405/413...: same JSON shape
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
        with log_context(corr_id), tracer.start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route,
                        "url.path": request.path[:200], "correlation_id": corr_id},
        ) as span:
            response = await _handle(request, handler)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
    response.headers[RESPONSE_HEADER] = corr_id
    metrics.http_requests.labels(route, request.method, str(response.status)).inc()
    metrics.http_request_duration.labels(route, request.method).observe(time.monotonic() - started)
    return response


WEB_APPLICATION_OPTIONS = {
    "client_max_size": MAX_BODY_BYTES,
    "handler_args": {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_HEADER_BYTES},
    "middlewares": [observe_requests],
}
