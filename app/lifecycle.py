"""What a worker does when it starts and stops, around Faust's own start-up."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import faust
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from app.adapters.kafka_access import wait_for_access
from app.adapters.topics import ensure_topic
from app.faust_compat import fixes
from app.settings import settings

log = logging.getLogger(__name__)


class PipelineApp(faust.App):
    """faust.App that creates its topics before it subscribes, and migrates PostgreSQL at start-up.

    `schema_ready` is set once the migrations are applied; the agent writes
    nothing before, and the worker is not ready before. `services` are the
    worker's parts (app.bootstrap.Services), built when the worker starts;
    `use(**parts)` swaps some of them before that (tests pass faulty ones).
    """

    def __init__(self, *args, topic_configs: dict[str, dict[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.topic_configs = topic_configs
        self.schema_ready = asyncio.Event()
        self.parts: dict[str, object] = {}
        self._services = None
        self.shutdown_deadline = ShutdownDeadline(settings.shutdown_timeout_seconds)

    def use(self, **parts: object) -> None:
        """Parts to build the worker with instead of the product's (see `app.bootstrap.bootstrap`)."""
        self.parts.update(parts)

    @property
    def services(self):
        if self._services is None:
            raise RuntimeError("the worker's services are built when the worker starts (app.main), not before")
        return self._services

    @services.setter
    def services(self, services) -> None:
        self._services = services

    @property
    def started(self) -> bool:
        """Whether the worker's start-up (app.main.start_worker) has run: Faust may signal worker init twice."""
        return self._services is not None

    async def on_first_start(self) -> None:
        log.info("Stream iterator: %s", fixes.stream_iterator())
        # Faust's producer starts before its web server, and one that cannot authenticate ends the
        # worker: wait for access first, answering the probes meanwhile (`app.adapters.kafka_access.wait_for_access`).
        await wait_for_access(lambda: settings.kafka, self.conf.web_bind, self.conf.web_port)
        # Before the consumer subscribes: a topic created later would be missed
        # by the first assignment until the next metadata refresh (minutes).
        for topic, config in self.topic_configs.items() if settings.kafka_create_topics else ():
            await ensure_topic(settings.kafka, topic, settings.command_topic_partitions,
                               settings.kafka_replication_factor, config)
        # In the background: the worker starts, and answers its probes, while PostgreSQL is away.
        self.add_future(self._migrate_when_reachable())
        await super().on_first_start()

    async def _migrate_when_reachable(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.5, max=settings.database_retry_max_seconds),
            before_sleep=_log_migration_retry,
        ):
            with attempt:
                await self.services.database.migrate()
        self.schema_ready.set()

    async def on_stop(self) -> None:
        # Faust calls this first when the worker stops (SIGTERM included).
        self.shutdown_deadline.start()
        if self._services is not None:
            await self._services.stop()
        await super().on_stop()


def _log_migration_retry(state) -> None:
    log.warning("Database migrations failed (attempt %d), retrying: %r", state.attempt_number, state.outcome.exception())


class ShutdownDeadline:
    """Ends the process when stopping takes longer than SHUTDOWN_TIMEOUT_SECONDS.

    A thread, so it fires even if the event loop is stuck. Exiting commits
    nothing: whatever was not acknowledged is read again by the next owner.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._exit)
            self._timer.daemon = True
            self._timer.start()

    def _exit(self) -> None:
        log.warning("Shutdown did not finish within %.0f s (SHUTDOWN_TIMEOUT_SECONDS); exiting now. "
                    "Nothing unprocessed was committed: the next owner reads it again", self.seconds)
        logging.shutdown()
        os._exit(0)

