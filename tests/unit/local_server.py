"""An aiohttp application served on a free loopback port, for tests of the web layer."""

from __future__ import annotations

import contextlib

from aiohttp import web

from app import aiohttp_compat
from web import middleware


@contextlib.asynccontextmanager
async def served(app: web.Application):
    """Yield the port `app` answers on, with aiohttp changed as a worker changes it at start; clean up after."""
    aiohttp_compat.install(middleware.parser_error)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
