"""Agent: take a batch, write it through the sink, acknowledge it."""

from __future__ import annotations

import logging
from typing import Sequence

from app.faust_compat import fixes as faust_fixes
from app.domain.dead_letters import DeadLetter
from app.domain.batch_plan import ConsumedMessage
from app.main import app, command_topic, database, dead_letter_topic
from app.domain.records import SourcePosition, TimestampRecord
from app.settings import settings
from app.sink.timestamp_sink import TimestampSink, WriteBehind
from tables.timestamps import ChangelogBatchWriter, timestamps

log = logging.getLogger(__name__)
STALL_SECONDS = 5.0


@app.agent(command_topic)
async def persist_timestamps(stream):
    """Acknowledge a batch only after the sink wrote all of it.

    `noack_take` leaves acknowledging to us (the app's stream class never acks
    on its own, see app/faust_compat/fixes.py), and `sink.write` raises nothing but
    cancellation, so no batch is ever acknowledged half done. Batches are
    written behind the loop (WriteBehind), in order, while it collects the next.
    """
    await database.migrate_when_reachable()  # consumes nothing until the schema is there
    changelog = ChangelogBatchWriter(timestamps, settings.kafka_bootstrap_servers,
                                     settings.command_topic_partitions, owned_command_partitions)
    sink = TimestampSink(
        database, send_dead_letters, TableWriter(changelog).update, settings.command_topic,
        settings.decode_limits, settings.database_retry_max_seconds,
    )

    async def write_and_ack(events) -> None:
        await sink.write([consumed(event) for event in events])
        for event in events:
            await stream.ack(event)
        stalls.progressed()

    writer = WriteBehind(write_and_ack)
    try:
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
            await writer.submit(events)
    finally:
        await writer.close()
        await changelog.stop()


def consumed(event) -> ConsumedMessage:
    message = event.message
    return ConsumedMessage(SourcePosition(message.topic, message.partition, message.offset),
                           message.value, message.headers, message.key)


async def send_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Send all, then wait until the broker acknowledged each."""
    deliveries = [
        await dead_letter_topic.send(key=letter.key, value=letter.value, headers=letter.headers, force=True)
        for letter in letters
    ]
    for delivery in deliveries:
        await delivery


stalls = faust_fixes.StallDetector(idle_seconds=STALL_SECONDS)


@app.timer(interval=STALL_SECONDS)
async def resume_stalled_partitions() -> None:
    """Seek a partition stuck behind a message that was never processed back to its committed offset."""
    if not app.flow_control.is_active():
        # A rebalance is under way: committed offsets are not known yet and its
        # own seek comes later. Judge stalls afresh once it is over.
        stalls.reset()
        return
    assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.command_topic]
    committed_by_tp = faust_fixes.committed_offsets(app.consumer)
    committed = {tp: committed_by_tp.get(tp) or 0 for tp in assigned}
    for tp, offset in stalls.stalled(committed, app.monitor.tp_end_offsets).items():
        log.warning("Partition %s[%d] stalled at offset %d; reading it again from there", tp.topic, tp.partition, offset)
        await app.consumer.seek(tp, offset)


@app.timer(interval=1.0)
async def close_idle_breaker() -> None:
    """Let a half-open PostgreSQL circuit breaker finish its trial with pings when no batch comes."""
    await database.try_half_open_breaker()


class TableWriter:
    """Puts the records of a batch in the query table, one changelog batch per partition."""

    def __init__(self, changelog: ChangelogBatchWriter) -> None:
        self.changelog = changelog

    async def update(self, records: list[TimestampRecord], inserted: dict) -> None:
        """Put newly inserted records in the table; fill in replayed ones it lacks."""
        missing = [r for r in records if r.id not in inserted and timestamps.get(str(r.id).encode()) is None]
        stored = {r.id: r for r in await database.fetch_records([r.id for r in missing])} if missing else {}
        await self.changelog.put_many(
            [(str(record.id).encode(), record.as_json(created_at=inserted[record.id])) for record in records
             if record.id in inserted]
            + [(str(record.id).encode(), record.as_json()) for record in stored.values()]
        )


def owned_command_partitions() -> set[int]:
    """Partitions of the command topic (and so of the table) this worker owns now."""
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.command_topic}
