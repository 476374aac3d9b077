"""GETs routed to the worker that owns a key's table partition, through Faust's router.

Faust's router raises several unrelated errors while it cannot name the owner
(a rebalance, metadata not fetched yet: a bare TypeError from inside
`app.router`); they are all `OwnerUnknown` here, so the view can answer from
PostgreSQL instead.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, Web
from faust.web.exceptions import ServiceUnavailable


class OwnerUnknown(Exception):
    """The owner of the key cannot be named or reached now."""


async def answer_from_owner(app: faust.App, table_name: str, key: bytes, web: Web,
                            forwarded: Callable[[], Request], keep_headers: tuple[str, ...] = ()) -> Response | None:
    """The owner's answer to `forwarded()`, or None when this worker owns the key and should answer itself.

    Forwarded like Faust's `router.route_req`, which keeps only the owner's body,
    status and content type; this keeps the headers named in `keep_headers` too.
    """
    try:
        owner, here = app.router.key_store(table_name, key), app.conf.canonical_url
        if (owner.host, owner.port) == (here.host, here.port):
            return None  # most GETs on one worker: not cloned for forwarding
        request = forwarded()
        url = request.url.with_host(owner.host).with_port(int(owner.port))
        async with app.http_client.request(method=request.method, headers=request.headers, url=url) as response:
            body = await response.read()
            kept = {name: response.headers[name] for name in keep_headers if name in response.headers}
            return web.bytes(body, content_type=response.content_type, status=response.status, headers=kept)
    except SameNode:
        return None
    except (KeyError, TypeError, ServiceUnavailable, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise OwnerUnknown(f"{type(exc).__name__}: {exc}") from exc
