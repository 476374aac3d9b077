"""The Faust application: `faust -A app.main worker` starts a worker."""

from __future__ import annotations

import logging
import os
import threading
import warnings

import faust
from faust.exceptions import AlreadyConfiguredWarning

from app.faust_compat import fixes as faust_fixes
from app.observability import metrics
from app.sink.circuit_breaker import CircuitBreaker
from app.adapters.database import Database
from app.faust_compat.options import DEAD_LETTER_MAX_BYTES, faust_options, kafka_request_timeout_seconds
from app.adapters.publisher import CommandPublisher
from app.settings import settings
from app.adapters.topics import ensure_topic
from app.observability.tracing import setup_tracing


log = logging.getLogger(__name__)
faust_fixes.apply()

# The default datadir names the web port; Faust formats it lazily at each use, so
# the late `--web-port` of the CLI is honoured, but Faust warns that the port was
# read before it was set.
warnings.filterwarnings("ignore", message=".*web_port.*", category=AlreadyConfiguredWarning)


class PipelineApp(faust.App):
    """faust.App that creates the command and dead-letter topics before it subscribes."""

    async def on_first_start(self) -> None:
        log.info("Stream iterator: %s", faust_fixes.stream_iterator())
        # Before the consumer subscribes: a topic created later would be missed
        # by the first assignment until the next metadata refresh (minutes).
        for topic, config in ((settings.command_topic, COMMAND_TOPIC_CONFIG),
                              (settings.dead_letter_topic, DEAD_LETTER_TOPIC_CONFIG)):
            await ensure_topic(
                settings.kafka_bootstrap_servers,
                topic,
                settings.command_topic_partitions,
                settings.kafka_replication_factor,
                config,
            )
        await super().on_first_start()

    async def on_stop(self) -> None:
        # Faust calls this first when the worker stops (SIGTERM included).
        shutdown_deadline.start()
        await command_publisher.stop()
        await super().on_stop()


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


shutdown_deadline = ShutdownDeadline(settings.shutdown_timeout_seconds)


# How long Kafka clients wait for one request; a POST gives up sooner (PUBLISH_TIMEOUT_SECONDS).
KAFKA_REQUEST_TIMEOUT_SECONDS = kafka_request_timeout_seconds(settings)

# The topic is the golden record: by default nothing is ever deleted from it.
COMMAND_TOPIC_CONFIG = {"retention.ms": str(settings.command_topic_retention_ms)}
DEAD_LETTER_TOPIC_CONFIG = {**COMMAND_TOPIC_CONFIG, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}

# The settings live in app/faust_compat/options.py, shared with the benchmark's bare agent.
app = PipelineApp(settings.app_id, **faust_options(settings))
setup_tracing(settings.service_name)
# Faust's own sensors and ours share the default registry, served at /metrics.
metrics.setup_faust_sensors(app, name_prefix="faust")


@app.on_worker_init.connect
def _create_data_dir(sender: faust.App, **kwargs) -> None:
    # Faust creates only the last level of its datadir; nested defaults need the rest.
    sender.conf.datadir.parent.mkdir(parents=True, exist_ok=True)


command_publisher = CommandPublisher(
    settings.kafka_bootstrap_servers, KAFKA_REQUEST_TIMEOUT_SECONDS, settings.max_in_flight_publishes)
metrics.command_publishes_in_flight.set_function(lambda: command_publisher.in_flight)

database = Database(
    settings.database_url,
    pool_size=settings.database_pool_size,
    timeout=settings.database_timeout_seconds,
    retry_max_seconds=settings.database_retry_max_seconds,
    breaker=CircuitBreaker(
        settings.circuit_breaker_failures,
        settings.circuit_breaker_reset_seconds,
        settings.circuit_breaker_successes,
        on_transition=metrics.record_breaker_transition,
    ),
)



def _bytes_topic(name: str) -> faust.TopicT:
    """A topic of raw bytes: the agent validates values itself, whoever produced them."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=settings.command_topic_partitions, config=COMMAND_TOPIC_CONFIG)


command_topic = _bytes_topic(settings.command_topic)
dead_letter_topic = _bytes_topic(settings.dead_letter_topic)


def consumer_lag() -> list[tuple[str, int, int]]:
    """(topic, partition, end offset - committed offset) of this worker's command partitions."""
    ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
    return [
        (tp.topic, tp.partition, max(0, ends[tp] - committed.get(tp, 0)))
        for tp in sorted(ends)
        if tp.topic == settings.command_topic and tp in app.consumer.assignment()
    ]


# Register agents, tables and views (they import `app` from this module).
import agents.persist_timestamps  # noqa: E402,F401
import agents.audit_offsets  # noqa: E402,F401
import tables.timestamps  # noqa: E402,F401
import web.event_views  # noqa: E402,F401
import web.health  # noqa: E402,F401
import web.metrics_view  # noqa: E402,F401
import web.openapi_view  # noqa: E402,F401
import web.timestamp_views  # noqa: E402,F401

metrics.register_collector(
    metrics.PipelineCollector(lag=consumer_lag, table_keys=lambda: len(tables.timestamps.timestamps))
)
