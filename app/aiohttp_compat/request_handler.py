"""The two places the worker changes aiohttp's `RequestHandler`; aiohttp has no public hook for either.

Installed by `app.aiohttp_compat.install()` at worker start, never at import.
`check_aiohttp_version` refuses an aiohttp they were not written for, and
`tests.unit.test_http_parser_errors` and `tests.unit.test_shedding` fail when
an upgrade stops calling the wrapped methods.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

SUPPORTED_AIOHTTP = ("3.",)

# When each connection's latest request data was read, by id(RequestHandler): the handler has __slots__.
_arrivals: dict[int, float] = {}

ParserErrorResponse = Callable[[web.BaseRequest, int, HttpProcessingError], web.StreamResponse]


def check_aiohttp_version(version: str = aiohttp.__version__) -> None:
    if not version.startswith(SUPPORTED_AIOHTTP):
        raise RuntimeError(f"aiohttp {version} is installed, but app/aiohttp_compat was written for 3.x: "
                           "re-check RequestHandler.handle_error, data_received and connection_lost")


def arrived_at(protocol: object) -> float | None:
    """time.monotonic() when this connection's request data was last read (None when unknown)."""
    return _arrivals.get(id(protocol))


def answer_parser_errors_with(respond: ParserErrorResponse) -> None:
    """Answer the 400s of aiohttp's HTTP parser with `respond(request, status, exc)`.

    The parser fails before any middleware runs, and RequestHandler.handle_error
    answers text/plain and logs a traceback (aio-libs/aiohttp#3287). This wraps
    that method, for parser errors only.
    """
    original = getattr(web.RequestHandler.handle_error, "__wrapped__", web.RequestHandler.handle_error)

    @functools.wraps(original)
    def handle_error(self, request, status=500, exc=None, message=None):
        if isinstance(exc, HttpProcessingError):
            return respond(request, status, exc)
        return original(self, request, status, exc, message)

    handle_error.answers_parser_errors_in_json = True
    web.RequestHandler.handle_error = handle_error


def record_arrivals() -> None:
    """Note when each connection's request data is read, so a request's wait in the worker is known.

    Under overload the event loop runs longer and longer between reading a
    request and running its handler; a request that waited past
    MAX_REQUEST_WAIT_SECONDS is then answered 503 at once instead of being
    handled seconds late. This wraps RequestHandler.data_received and
    connection_lost.
    """
    handler = web.RequestHandler
    if getattr(handler.data_received, "records_arrivals", False):
        return
    original_received, original_lost = handler.data_received, handler.connection_lost

    @functools.wraps(original_received)
    def data_received(self, data: bytes) -> None:
        _arrivals[id(self)] = time.monotonic()
        original_received(self, data)

    @functools.wraps(original_lost)
    def connection_lost(self, exc) -> None:
        _arrivals.pop(id(self), None)
        original_lost(self, exc)

    data_received.records_arrivals = True
    handler.data_received, handler.connection_lost = data_received, connection_lost
