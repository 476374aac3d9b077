"""aiohttp middleware around every view: correlation ids and JSON errors."""

from __future__ import annotations

import contextvars
import logging

from aiohttp import web

from app.correlation import HTTP_HEADERS, InvalidCorrelationId, new_correlation_id, validate_correlation_id

log = logging.getLogger(__name__)
RESPONSE_HEADER = "X-Correlation-ID"
correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# Limits on what a client may send (aiohttp answers 400/413 beyond them).
MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096  # request line, so the URL too
MAX_HEADER_BYTES = 8190
WEB_APPLICATION_OPTIONS = {
    "client_max_size": MAX_BODY_BYTES,
    "handler_args": {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_HEADER_BYTES},
}


def json_error(status: int, error: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status, headers=headers)


def _requested_correlation_id(request: web.Request) -> str | None:
    for name in HTTP_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            return validate_correlation_id(value.strip())
    return None


@web.middleware
async def correlation_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Take or make the request's correlation id, keep it in context, echo it back."""
    try:
        corr_id = _requested_correlation_id(request) or new_correlation_id()
    except InvalidCorrelationId as exc:
        corr_id = new_correlation_id()
        response = json_error(400, "invalid_correlation_id", str(exc))
    else:
        token = correlation_id.set(corr_id)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404/405/413...: same JSON shape
            response = json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        except Exception:
            log.exception("Unhandled error in %s %s", request.method, request.path)
            response = json_error(500, "internal_error", "unexpected error; see the worker log")
        finally:
            correlation_id.reset(token)
    response.headers[RESPONSE_HEADER] = corr_id
    return response


WEB_APPLICATION_OPTIONS["middlewares"] = [correlation_middleware]
