"""The composition root: the worker's long-lived parts, built once when it starts.

`app.main` calls `bootstrap(settings, **app.parts)` at worker start; agents,
tables and views reach the parts through `app.services`. Every part can be
swapped by a keyword argument with the same signature as the product's class
or function: the tests' faulty worker passes faulty ones, nothing patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from app.adapters.database import Database
from app.adapters.publisher import CommandPublisher
from app.domain.batch_plan import plan_batch
from app.domain.dead_letters import DeadLetter
from app.faust_app import dead_letter_topic
from app.faust_compat.options import kafka_request_timeout_seconds
from app.observability import metrics
from app.settings import Settings
from app.sink.batch_writer import BatchWriter, PlanBatch
from app.sink.circuit_breaker import CircuitBreaker
from tables.table_expiry import TableExpiry
from tables.timestamps_by_id import TimestampTableWriter, owned_table_partitions, table_expiry


@dataclass(frozen=True)
class Services:
    """What agents, tables and views share."""

    database: Database
    command_publisher: CommandPublisher  # POSTs publish through their own producer
    database_breaker: CircuitBreaker  # guards the agent's PostgreSQL writes; readiness reports it
    table_writer: TimestampTableWriter
    batch_writer: BatchWriter  # the agent's write path: PostgreSQL, the table, dead letters
    table_expiry: TableExpiry | None  # TABLE_RETENTION's sweeper (None without it)

    async def stop(self) -> None:
        """At worker stop: the agent stops the table writer itself, after its last write."""
        await self.command_publisher.stop()
        if self.table_expiry is not None:
            await self.table_expiry.changelog.stop()


async def send_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Send all, then wait until the broker acknowledged each."""
    deliveries = [
        await dead_letter_topic.send(key=letter.key, value=letter.value, headers=letter.headers, force=True)
        for letter in letters
    ]
    for delivery in deliveries:
        await delivery


def bootstrap(settings: Settings, *,
              database: Callable[..., Database] = Database,
              command_publisher: Callable[..., CommandPublisher] = CommandPublisher,
              database_breaker: Callable[..., CircuitBreaker] = CircuitBreaker,
              table_writer: Callable[..., TimestampTableWriter] = TimestampTableWriter,
              batch_writer: Callable[..., BatchWriter] = BatchWriter,
              plan: PlanBatch = plan_batch) -> Services:
    """Build the worker's parts from the settings; connects to nothing (each part connects on first use)."""
    publisher = command_publisher(settings.kafka, kafka_request_timeout_seconds(settings),
                                  settings.max_in_flight_publishes)
    metrics.command_publishes_in_flight.set_function(lambda: publisher.in_flight)
    db = database(settings.database_dsn, pool_size=settings.database_pool_size,
                  timeout=settings.database_timeout_seconds)
    breaker = database_breaker(settings.circuit_breaker_failures, settings.circuit_breaker_reset_seconds,
                               settings.circuit_breaker_successes, on_transition=metrics.record_breaker_transition)
    table = table_writer(database=db, owned_partitions=owned_table_partitions)
    writer = batch_writer(
        database=db, send_dead_letters=send_dead_letters, update_table=table.update,
        topic=settings.command_topic, limits=settings.decode_limits,
        retry_max_seconds=settings.database_retry_max_seconds, breaker=breaker,
        dead_letter_topic=settings.dead_letter_topic, plan=plan,
    )
    return Services(database=db, command_publisher=publisher, database_breaker=breaker, table_writer=table,
                    batch_writer=writer, table_expiry=table_expiry(db))
