"""No endpoint reads a request body: one is ignored, but bounded the same way with Content-Length or chunked.

A real aiohttp server with the worker's middleware and a POST handler standing in
for the publish: the handler must run only for a body that ended in time and
within MAX_BODY_BYTES. The real worker is tested in tests/integration/test_api.py.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests import raw_http
from tests.unit.local_server import served
from web import middleware
from web.middleware import MAX_BODY_BYTES, WEB_APPLICATION_OPTIONS

PATH = "/api/v1/timestamp"
TIMEOUT = 0.5


@pytest.fixture
async def server(monkeypatch):
    """(port, list of the bodies the handler saw unread: one entry per publish)."""
    monkeypatch.setattr(middleware, "BODY_READ_TIMEOUT_SECONDS", TIMEOUT)
    published: list[bool] = []
    app = web.Application(**WEB_APPLICATION_OPTIONS)

    async def publish(request: web.Request) -> web.Response:
        published.append(request.content.at_eof())
        return web.json_response({"id": "published"})

    app.router.add_post(PATH, publish)
    async with served(app) as port:
        yield port, published


async def send(port: int, request: bytes) -> raw_http.Answer:
    return await raw_http.send("127.0.0.1", port, request, timeout=10 * TIMEOUT + 5)


@pytest.mark.parametrize("request_bytes", [
    raw_http.sized(PATH, 0, b""),
    raw_http.sized(PATH, 17, b'{"ignored": true}'),
    raw_http.sized(PATH, MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES),
    raw_http.chunked(PATH, [b'{"ignored":', b" true}"]),
    raw_http.chunked(PATH, [b"x" * 4096] * (MAX_BODY_BYTES // 4096)),  # exactly the limit
    raw_http.chunked(PATH, []),
], ids=["empty", "small", "at-limit", "chunked-small", "chunked-at-limit", "chunked-empty"])
async def test_a_body_that_ends_within_the_limit_is_ignored(server, request_bytes):
    port, published = server
    answer = await send(port, request_bytes)
    assert (answer.status, answer.json()) == (200, {"id": "published"})
    assert published == [True]  # the handler ran once, after the whole body was read


@pytest.mark.parametrize("request_bytes, message", [
    (raw_http.sized(PATH, MAX_BODY_BYTES + 1, b"x" * (MAX_BODY_BYTES + 1)),
     f"the request body (Content-Length {MAX_BODY_BYTES + 1}) is over the {MAX_BODY_BYTES} bytes allowed"),
    (raw_http.sized(PATH, 1 << 40, b"x"),  # refused on the declared length, before any is read
     f"the request body (Content-Length {1 << 40}) is over the {MAX_BODY_BYTES} bytes allowed"),
    (raw_http.chunked(PATH, [b"x" * 65536] * 16),  # 1 MiB
     f"the chunked request body is over the {MAX_BODY_BYTES} bytes allowed"),
    (raw_http.chunked(PATH, [b"x" * MAX_BODY_BYTES, b"y"]),  # one byte over, in a last chunk
     f"the chunked request body is over the {MAX_BODY_BYTES} bytes allowed"),
    (raw_http.chunked(PATH, [b"x" * (MAX_BODY_BYTES + 1)], finish=False),  # too large before it even ends
     f"the chunked request body is over the {MAX_BODY_BYTES} bytes allowed"),
], ids=["content-length", "content-length-declared", "chunked-1MiB", "chunked-one-over", "chunked-unfinished"])
async def test_a_body_over_the_limit_is_413_and_nothing_is_published(server, request_bytes, message):
    port, published = server
    answer = await send(port, request_bytes)
    assert (answer.status, answer.json()) == (413, {"error": "request_too_large", "message": message})
    assert answer.headers["connection"] == "close"
    assert published == []


@pytest.mark.parametrize("request_bytes, message", [
    (raw_http.chunked(PATH, [b'{"never": '], finish=False),
     f"the request body (chunked) did not end within {TIMEOUT:g} s (10 bytes received)"),
    (raw_http.chunked(PATH, [], finish=False),
     f"the request body (chunked) did not end within {TIMEOUT:g} s (0 bytes received)"),
    (raw_http.sized(PATH, 100, b'{"never": '),
     f"the request body (Content-Length 100) did not end within {TIMEOUT:g} s (10 bytes received)"),
], ids=["chunked", "chunked-no-chunk", "content-length"])
async def test_a_body_that_does_not_end_is_408_and_nothing_is_published(server, request_bytes, message):
    port, published = server
    started = asyncio.get_running_loop().time()
    answer = await send(port, request_bytes)
    assert (answer.status, answer.json()) == (408, {"error": "request_timeout", "message": message})
    assert TIMEOUT <= asyncio.get_running_loop().time() - started < TIMEOUT + 5
    assert published == []


async def test_a_client_gone_before_its_body_ended_publishes_nothing(server):
    port, published = server
    for request_bytes in (raw_http.chunked(PATH, [b"{"], finish=False), raw_http.sized(PATH, 100, b"{")):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(TIMEOUT + 0.5)
    assert published == []


async def test_a_malformed_chunk_is_a_json_400_and_nothing_is_published(server):
    port, published = server
    request_bytes = raw_http.chunked(PATH, [b"{}"], finish=False) + b"zz\r\nnot a chunk size\r\n"
    answer = await send(port, request_bytes)
    assert answer.status == 400 and answer.json()["error"] == "bad_request"
    assert published == []
