"""An API request that waited past MAX_REQUEST_WAIT_SECONDS in the worker is shed: 503 + Retry-After.

app/aiohttp_compat/request_handler.py learns when a request was read by wrapping aiohttp's
RequestHandler.data_received (there is no public hook); these tests fail when an
aiohttp upgrade stops calling it. A real aiohttp server with the worker's
middleware; two requests pipelined on one connection are read together, and the
first one's handler blocks the event loop, so the second has waited.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from app.observability import metrics
from tests.unit.local_server import served
from app.aiohttp_compat import request_handler
from web import middleware
from web.middleware import WEB_APPLICATION_OPTIONS

BLOCK_SECONDS = 0.5


@pytest.fixture
async def port():
    app = web.Application(**WEB_APPLICATION_OPTIONS)

    async def block(request: web.Request) -> web.Response:
        time.sleep(BLOCK_SECONDS)  # a busy event loop, like a long batch
        return web.json_response({"blocked": True})

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    app.router.add_get("/api/v1/block", block)
    app.router.add_get("/api/v1/fast", answer)
    app.router.add_get("/health", answer)
    async with served(app) as port:
        yield port


async def pipelined(port: int, paths: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """Send all requests in one write on one connection; (status, headers, body) of each answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    last = len(paths) - 1
    writer.write(b"".join(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n{'Connection: close' if i == last else ''}\r\n\r\n".encode()
        for i, path in enumerate(paths)))
    await writer.drain()
    answers = []
    for _ in paths:
        status_line = await asyncio.wait_for(reader.readline(), 10)
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        answers.append((int(status_line.split()[1]), headers, body))
    writer.close()
    return answers


def shed_count(route: str, reason: str) -> float:
    return metrics.http_requests_shed.labels(route, "GET", reason)._value.get()


async def test_a_request_that_waited_behind_a_busy_loop_is_shed_and_probes_never_are(port, monkeypatch):
    monkeypatch.setattr(middleware, "MAX_REQUEST_WAIT_SECONDS", BLOCK_SECONDS / 2)
    before = shed_count("/api/v1/fast", "waited")
    blocked, fast, health = await pipelined(port, ["/api/v1/block", "/api/v1/fast", "/health"])
    assert blocked[0] == 200
    status, headers, body = fast
    assert status == 503, body
    assert headers["retry-after"] == "1" and headers["content-type"].startswith("application/json")
    assert b'"error": "overloaded"' in body and "x-correlation-id" in headers
    assert health[0] == 200  # probes are never shed
    assert shed_count("/api/v1/fast", "waited") == before + 1


async def test_within_the_limit_nothing_is_shed(port, monkeypatch):
    monkeypatch.setattr(middleware, "MAX_REQUEST_WAIT_SECONDS", BLOCK_SECONDS * 20)
    answers = await pipelined(port, ["/api/v1/block", "/api/v1/fast"])
    assert [status for status, _, _ in answers] == [200, 200]


async def test_arrival_times_are_forgotten_with_their_connection(port):
    before = set(request_handler._arrivals)
    await pipelined(port, ["/api/v1/fast"])
    await asyncio.sleep(0.05)
    assert set(request_handler._arrivals) <= before
