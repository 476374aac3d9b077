"""Timer: audit this worker's command partitions and export `timestamp_audit_gap_messages`.

Every AUDIT_INTERVAL_SECONDS, and once right after each rebalance (the
timer's first run is a whole interval away), the last AUDIT_WINDOW_MESSAGES
offsets below the committed offset of each assigned partition are checked
against processed_events (see `app.ops.audit`). A failed run logs one line and
leaves the last figures in place; `timestamp_audit_last_success_timestamp_seconds`
then stops advancing, which is what alerts on a broken audit.
"""

from __future__ import annotations

import asyncio
import logging

from app.faust_app import app
from app.observability import metrics
from app.ops import audit
from app.settings import settings

log = logging.getLogger(__name__)
_running = asyncio.Lock()


async def audit_assigned_partitions() -> None:
    """One audit of the assigned command partitions; never raises (a timer that raises stops the worker)."""
    if _running.locked():
        return  # the previous run is still going
    async with _running:
        topic = settings.command_topic
        try:
            assigned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)
            metrics.forget_audit_partitions(topic, assigned)
            if not assigned:
                metrics.record_audit(topic, {})  # nothing to audit is a completed audit
                return
            kafka = audit.KafkaView(settings.kafka, topic,
                                    audit.isolation_level(settings.processing_guarantee))
            async with kafka:
                report = await audit.audit(kafka, app.services.database, settings.app_id, assigned,
                                           window_size=settings.audit_window_messages)
        except Exception as exc:
            log.warning("Offset audit failed (next try in %.0f s): %s: %s", settings.audit_interval_seconds,
                        type(exc).__name__, " ".join(str(exc).split()))  # one line, whatever the driver says
            return
        metrics.record_audit(topic, {p.partition: p.missing for p in report.partitions})
        if report.missing:
            found = ", ".join(f"{p.partition}: [{a}, {b})" for p in report.partitions for a, b in p.gaps)
            log.error("Offset audit: %d messages below the committed offset have no processed_events row (%s); "
                      "run `python -m app audit --repair`", report.missing, found)


@app.timer(interval=settings.audit_interval_seconds)
async def audit_offsets() -> None:
    await audit_assigned_partitions()


@app.on_rebalance_complete.connect
async def audit_after_rebalance(sender, **kwargs) -> None:
    # In the background (the rebalance must not wait for it); the app awaits or cancels it when stopping.
    app.add_future(audit_assigned_partitions())
