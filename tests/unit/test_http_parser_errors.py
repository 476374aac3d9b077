"""Requests aiohttp's HTTP parser refuses get our JSON error and one log line.

app/aiohttp_compat/request_handler.py wraps aiohttp's RequestHandler.handle_error for this (there is
no public hook); these tests fail when an aiohttp upgrade stops routing parser
errors through it.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web

from app import aiohttp_compat
from tests.raw_http import raw_request
from tests.unit.local_server import served
from web import middleware
from web.middleware import MAX_HEADER_BYTES, MAX_LINE_BYTES, WEB_APPLICATION_OPTIONS


@pytest.fixture
async def port():
    app = web.Application(**WEB_APPLICATION_OPTIONS)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    app.router.add_get("/health", hello)
    async with served(app) as port:
        yield port


@pytest.mark.parametrize(
    "data, error",
    [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n",
         "header_too_large"),
        (b"GET /health/" + b"9" * MAX_LINE_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n", "request_line_too_long"),
        (b"GET /health HTTP/1.1 trailing-garbage\r\nHost: x\r\n\r\n", "bad_request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "bad_request"),  # TLS on the HTTP port
    ],
    ids=["header", "request-line-length", "request-line-syntax", "tls-hello"],
)
async def test_parser_errors_are_json_and_one_log_line(port, caplog, data, error):
    caplog.set_level(logging.DEBUG)
    status, headers, body = await raw_request(port, data)

    assert status == 400
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["error"] == error and set(answer) == {"error", "message"}
    assert answer["message"]
    assert headers["x-correlation-id"].startswith("ING:")
    refused = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING
    assert error in refused[0].getMessage() and "\n" not in refused[0].getMessage()
    assert [r for r in caplog.records if r.exc_info] == []
    assert [r for r in caplog.records if r.name.startswith("aiohttp")] == []


async def test_well_formed_requests_are_untouched(port):
    status, headers, body = await raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    assert json.loads(body) == {"status": "UP"}


async def test_other_errors_keep_aiohttps_handling():
    """Only parser errors are ours: without our middleware, a handler timeout still gets aiohttp's 504."""
    aiohttp_compat.install(middleware.parser_error)
    assert web.RequestHandler.handle_error.answers_parser_errors_in_json

    async def slow(request: web.Request) -> web.Response:
        raise asyncio.TimeoutError

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        status, headers, _ = await raw_request(runner.addresses[0][1], b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert status == 504
    assert headers["content-type"].startswith("text/plain")


def test_an_aiohttp_the_fence_was_not_written_for_is_refused():
    from app.aiohttp_compat.request_handler import check_aiohttp_version

    check_aiohttp_version("3.14.5")
    with pytest.raises(RuntimeError, match="aiohttp 4.0.0 is installed"):
        check_aiohttp_version("4.0.0")
