"""Agent: take a batch, write it through the sink, acknowledge it."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

from app import faust_fixes
from app.dead_letters import DeadLetter
from app.enrichment import ConsumedMessage
from app.main import app, command_topic, database, dead_letter_topic
from app.records import SourcePosition, TimestampRecord
from app.settings import settings
from app.sink import TimestampSink
from tables.timestamps import timestamps

log = logging.getLogger(__name__)
STALL_SECONDS = 5.0


@app.agent(command_topic)
async def persist_timestamps(stream):
    """Acknowledge a batch only after the sink wrote all of it.

    `noack_take` leaves acknowledging to us (the app's stream class never acks
    on its own, see app/faust_fixes.py), and `sink.write` raises nothing but
    cancellation, so the loop never exits with a batch half done.
    """
    await database.migrate_when_reachable()  # consumes nothing until the schema is there
    table_writer = TableWriter(stream)
    sink = TimestampSink(
        database, send_dead_letters, table_writer.update, settings.command_topic,
        settings.decode_limits, settings.database_retry_max_seconds,
    )
    async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
        table_writer.events = {(e.message.partition, e.message.offset): e for e in events}
        await sink.write([consumed(event) for event in events])
        for event in events:
            await stream.ack(event)
        stalls.progressed()


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
    committed = {tp: app.consumer._committed_offset.get(tp) or 0 for tp in assigned}
    for tp, offset in stalls.stalled(committed, app.monitor.tp_end_offsets).items():
        log.warning("Partition %s[%d] stalled at offset %d; reading it again from there", tp.topic, tp.partition, offset)
        await app.consumer.seek(tp, offset)


class TableWriter:
    """Puts records in the query table, each write made as its own event's.

    The RocksDB store files a key under the partition of the event being
    processed, which Faust reads from the stream; there is no await between
    setting and restoring it, so nothing else sees it.
    """

    def __init__(self, stream) -> None:
        self.stream = stream
        self.events: dict[tuple[int, int], object] = {}

    async def update(self, records: list[TimestampRecord], inserted: dict) -> None:
        """Put newly inserted records in the table; fill in replayed ones it lacks."""
        missing = [r for r in records if r.id not in inserted and timestamps.get(str(r.id).encode()) is None]
        stored = {r.id: r for r in await database.fetch_records([r.id for r in missing])} if missing else {}
        previous = self.stream.current_event  # restored below: the stream's buffering reads it
        try:
            for record in records:
                view = None
                if record.id in inserted:
                    view = replace(record, created_at=inserted[record.id]).as_view()
                elif record.id in stored:
                    view = stored[record.id].as_view()
                if view is not None:
                    self.stream._set_current_event(self.events[(record.source.partition, record.source.offset)])
                    timestamps[str(record.id).encode()] = view
        finally:
            self.stream._set_current_event(previous)
