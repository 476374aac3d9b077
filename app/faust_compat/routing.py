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
                            forwarded: Callable[[], Request]) -> Response | None:
    """The owner's answer to `forwarded()`, or None when this worker owns the key and should answer itself."""
    try:
        owner, here = app.router.key_store(table_name, key), app.conf.canonical_url
        if (owner.host, owner.port) == (here.host, here.port):
            return None  # most GETs on one worker: not cloned for forwarding
        return await app.router.route_req(table_name, key, web, forwarded())
    except SameNode:
        return None
    except (KeyError, TypeError, ServiceUnavailable, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise OwnerUnknown(f"{type(exc).__name__}: {exc}") from exc
