"""Agent: validate, enrich and persist timestamp commands, then update the query table."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from app import faust_fixes, metrics
from app.dead_letters import dead_letter
from app.enrichment import BatchPlan, ConsumedMessage, plan_batch
from app.logs import log_context
from app.main import app, command_topic, database, dead_letter_topic
from app.records import SourcePosition, TimestampRecord
from app.settings import settings
from app.timestamps import utc_now
from app.tracing import database_write_span, start_processing_spans
from tables.timestamps import timestamps

log = logging.getLogger(__name__)
STALL_SECONDS = 5.0


@app.agent(command_topic)
async def persist_timestamps(stream):
    """One PostgreSQL transaction per batch; offsets are acknowledged after it commits.

    `noack_take` (unlike `take_events`, which acks in a `finally` even when the
    body raised) leaves acknowledging to us, so a batch whose write failed or was
    interrupted is never committed and is consumed again.
    """
    await database.migrate()
    async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
        messages = [
            ConsumedMessage(
                SourcePosition(e.message.topic, e.message.partition, e.message.offset),
                e.message.value,
                e.message.headers,
                e.message.key,
            )
            for e in events
        ]
        spans = start_processing_spans(settings.command_topic, [m.headers for m in messages])
        try:
            plan = plan_batch(messages, processed_at=utc_now())
            report_skipped(plan)
            await send_dead_letters(messages, plan)
            with database_write_span(spans):
                started = time.monotonic()
                inserted = await database.persist_batch_with_retry(plan)
                metrics.db_write_duration.observe(time.monotonic() - started)
            await update_table(stream, events, plan.records, inserted)
        except Exception:
            # Not acknowledged: Faust restarts the agent, and the batch is read
            # again once resume_stalled_partitions sees its partition stuck.
            metrics.events_processed.labels("failed").inc(len(events))
            raise
        finally:
            for span in spans:
                span.end()
        record_outcomes(plan, inserted)
        for event in events:
            await stream.ack(event)
        stalls.progressed()


stalls = faust_fixes.StallDetector(idle_seconds=STALL_SECONDS)


@app.timer(interval=STALL_SECONDS)
async def resume_stalled_partitions() -> None:
    """Seek a partition stuck behind a message skipped in a rebalance back to its committed offset."""
    assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.command_topic]
    committed = {tp: app.consumer._committed_offset.get(tp) or 0 for tp in assigned}
    for tp, offset in stalls.stalled(committed, app.monitor.tp_end_offsets).items():
        log.warning("Partition %s[%d] stalled at offset %d; reading it again from there", tp.topic, tp.partition, offset)
        await app.consumer.seek(tp, offset)


def report_skipped(plan: BatchPlan) -> None:
    for skipped in plan.skipped:
        with log_context(skipped.correlation_id, str(skipped.event_id) if skipped.event_id else None):
            log.warning("Skipped message %s[%d]@%d: %s%s", skipped.source.topic, skipped.source.partition,
                        skipped.source.offset, skipped.status, f" ({skipped.error})" if skipped.error else "")


async def send_dead_letters(messages: list[ConsumedMessage], plan: BatchPlan) -> None:
    """Dead-letter the invalid messages, acknowledged by the broker before the batch commits."""
    by_position = {m.source: m for m in messages}
    letters = [dead_letter(by_position[e.source], e) for e in plan.skipped if e.status == "invalid"]
    deliveries = [
        await dead_letter_topic.send(key=letter.key, value=letter.value, headers=letter.headers, force=True)
        for letter in letters
    ]
    for delivery in deliveries:
        await delivery
    metrics.dead_letters.inc(len(letters))


def record_outcomes(plan: BatchPlan, inserted: dict) -> None:
    """Metrics of a committed batch."""
    events = plan.processed_events(set(inserted))
    metrics.batch_size.observe(len(events))
    for event in events:
        metrics.events_processed.labels(event.status).inc()
    now = utc_now()
    for record in plan.records:
        if record.id in inserted and record.received_at is not None:
            metrics.end_to_end_latency.observe(max(0.0, (now - record.received_at).total_seconds()))


async def update_table(stream, events, records: list[TimestampRecord], inserted: dict) -> None:
    """Put newly inserted records in the table; fill in replayed ones it lacks.

    Each write is made as its own event's: the RocksDB store files a key under the
    partition of the event being processed, which Faust reads from the stream.
    There is no await between setting and restoring it, so nothing else sees it.
    """
    event_at = {(e.message.partition, e.message.offset): e for e in events}
    previous = stream.current_event  # restored below: the stream's buffering reads it
    missing = [r for r in records if r.id not in inserted and timestamps.get(str(r.id).encode()) is None]
    stored = {r.id: r for r in await database.fetch_records([r.id for r in missing])} if missing else {}
    for record in records:
        view = None
        if record.id in inserted:
            view = replace(record, created_at=inserted[record.id]).as_view()
        elif record.id in stored:
            view = stored[record.id].as_view()
        if view is not None:
            stream._set_current_event(event_at[(record.source.partition, record.source.offset)])
            timestamps[str(record.id).encode()] = view
    stream._set_current_event(previous)
