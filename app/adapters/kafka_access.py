"""Before Faust starts its Kafka clients: wait until the brokers accept this worker, and say why not.

Faust starts its producer before its web server, and a producer that cannot
authenticate (a wrong password, an untrusted certificate) ends the worker,
which then restarts in a loop that hides the cause. Instead the worker checks
access first, once per attempt with a back-off: one log line per attempt
naming what the broker said, and meanwhile a stand-in HTTP server on the
worker's port answers `/health/live` (200), `/health/ready` (503, with the
reason) and `/metrics`. The credentials are read again at every attempt (a
password file, a certificate), so fixing a mounted Secret makes the worker
start without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.adapters.kafka_client import KafkaConnection, client_options

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 30.0


class _Captured(logging.Handler):
    """aiokafka logs why a connection failed and raises a generic error: keep the why."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _aiokafka_errors():
    captured = _Captured()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(captured)
    propagate, logger.propagate = logger.propagate, False  # our one line per attempt says it
    try:
        yield captured
    finally:
        logger.removeHandler(captured)
        logger.propagate = propagate


def explain(error: BaseException, aiokafka_said: list[str]) -> str:
    """One line: what the broker or the TLS handshake refused (pure)."""
    said = [m for m in aiokafka_said if "Unable connect" in m or "Authentication" in m or "SSL" in m]
    text = said[-1] if said else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    lowered = text.lower()
    if "authentication" in lowered or "sasl" in lowered:
        kind = "authentication failed"
    elif "certificate" in lowered or "ssl" in lowered:
        kind = "TLS handshake failed"
    else:
        kind = "brokers unreachable"
    return f"{kind}: {text}"[:500]


async def check_access(kafka: KafkaConnection, timeout_seconds: float = 10.0) -> None:
    """Connect, authenticate and read the cluster's metadata with this worker's credentials."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=int(timeout_seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_seconds)
        await asyncio.wait_for(admin.describe_cluster(), timeout_seconds)
    finally:
        await admin.close()


class StandInServer:
    """Answers the probes on the worker's port until Faust's own web server takes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reason = "starting"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        application = web.Application()
        application.router.add_get("/health/live", self._live)
        application.router.add_get("/health", self._live)
        application.router.add_get("/health/ready", self._ready)
        application.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(application, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    async def _ready(self, request: web.Request) -> web.Response:
        body = {"status": "DOWN", "checks": {"kafka": {"status": "DOWN", "error": self.reason}}}
        return web.json_response(body, status=503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def wait_for_access(connection, host: str, port: int, attempt_timeout: float = 10.0) -> None:
    """Return once Kafka accepts `connection()` (asked again at each attempt); serve the probes meanwhile."""
    server: StandInServer | None = None
    attempt, delay, started = 0, 1.0, time.monotonic()
    try:
        while True:
            attempt += 1
            with _aiokafka_errors() as said:
                try:
                    await check_access(connection(), attempt_timeout)
                    break
                except Exception as exc:  # noqa: BLE001  every refusal is reported the same way
                    reason = explain(exc, said.messages)
            log.error("Kafka does not accept this worker yet (attempt %d, next in %.0f s): %s",
                      attempt, delay, reason)
            if server is None:
                server = StandInServer(host, port)
                try:
                    await server.start()
                except OSError as exc:
                    log.warning("Could not serve the probes on %s:%d meanwhile: %s", host, port, exc)
            server.reason = reason
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
    finally:
        if server is not None:
            await server.stop()
    if attempt > 1:
        log.warning("Kafka accepts this worker after %d attempts (%.0f s)", attempt, time.monotonic() - started)
