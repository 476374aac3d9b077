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
        await update_table(plan.records, inserted)
        for event in events:
            await stream.ack(event)


async def update_table(records: list[TimestampRecord], inserted: dict) -> None:
    """Put newly inserted records in the table; fill in replayed ones it lacks."""
    for record in records:
        if record.id in inserted:
            timestamps[str(record.id)] = replace(record, created_at=inserted[record.id]).as_view()
    missing = [r.id for r in records if r.id not in inserted and timestamps.get(str(r.id)) is None]
    if missing:
        for record in await database.fetch_records(missing):
            timestamps[str(record.id)] = record.as_view()
