"""Agent: validate, enrich and persist timestamp commands, then update the query table."""

from __future__ import annotations

import logging
from dataclasses import replace

from app.enrichment import ConsumedMessage, plan_batch
from app.main import app, command_topic, database
from app.records import SourcePosition, TimestampRecord
from app.settings import settings
from app.timestamps import utc_now
from tables.timestamps import timestamps

log = logging.getLogger(__name__)


@app.agent(command_topic)
async def persist_timestamps(stream):
    """One PostgreSQL transaction per batch; offsets are acknowledged after it commits.

    `noack_take` (unlike `take_events`) leaves acknowledging to us, so a batch whose
    write failed or was interrupted is never committed and is consumed again.
    """
    await database.migrate()
    async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
        plan = plan_batch(
            (
                ConsumedMessage(
                    SourcePosition(e.message.topic, e.message.partition, e.message.offset),
                    e.message.value,
                    e.message.headers,
                )
                for e in events
            ),
            processed_at=utc_now(),
        )
        for skipped in plan.skipped:
            log.warning("Skipped message at %s: %s %s", skipped.source, skipped.status, skipped.error or "")
        inserted = await database.persist_batch_with_retry(plan)
        await update_table(stream, events, plan.records, inserted)
        for event in events:
            await stream.ack(event)


async def update_table(stream, events, records: list[TimestampRecord], inserted: dict) -> None:
    """Put newly inserted records in the table; fill in replayed ones it lacks.

    Each write is made as its own event's: the RocksDB store files a key under the
    partition of the event being processed, which Faust reads from the stream.
    """
    event_at = {(e.message.partition, e.message.offset): e for e in events}
    missing = [r for r in records if r.id not in inserted and timestamps.get(str(r.id)) is None]
    stored = {r.id: r for r in await database.fetch_records([r.id for r in missing])} if missing else {}
    for record in records:
        view = None
        if record.id in inserted:
            view = replace(record, created_at=inserted[record.id]).as_view()
        elif record.id in stored:
            view = stored[record.id].as_view()
        if view is not None:
            stream._set_current_event(event_at[(record.source.partition, record.source.offset)])
            timestamps[str(record.id)] = view
    stream._set_current_event(None)
