"""Agent: the command topic, a batch at a time, into PostgreSQL, the query table and the dead letters."""

from __future__ import annotations

from typing import Sequence

from app.domain.dead_letters import DeadLetter
from app.faust_compat.stalls import resume_stalled_partitions
from app.main import app, command_topic, dead_letter_topic
from app.services import database, database_breaker
from app.settings import settings
from app.sink.batching_sink import BatchingSink
from app.sink.timestamp_sink import TimestampSink
from tables.timestamps_by_id import TimestampTableWriter, owned_table_partitions

stalls = resume_stalled_partitions(app, settings.command_topic, report_after_seconds=settings.partition_stall_seconds)


@app.agent(command_topic)
async def persist_timestamps(stream):
    """take → plan → dead-letter → write → table → ack: the steps are app/sink/timestamp_sink.py's.

    `noack_take` leaves acknowledging to the sink, which acks a batch only
    after all of it is written (app/sink/batching_sink.py).
    """
    await app.schema_ready.wait()  # migrations run at start-up (app/lifecycle.py)
    table = TimestampTableWriter(database, owned_table_partitions)
    writer = TimestampSink(database, send_dead_letters, table.update, settings.command_topic,
                           settings.decode_limits, settings.database_retry_max_seconds, database_breaker,
                           dead_letter_topic=settings.dead_letter_topic)
    try:
        async with BatchingSink(writer, ack=stream.ack, on_writing=stalls.writing,
                                on_acked=stalls.progressed) as sink:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
                await sink.submit(events)
    finally:
        await table.stop()


async def send_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Send all, then wait until the broker acknowledged each."""
    deliveries = [
        await dead_letter_topic.send(key=letter.key, value=letter.value, headers=letter.headers, force=True)
        for letter in letters
    ]
    for delivery in deliveries:
        await delivery

