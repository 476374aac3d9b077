"""Agent: the command topic, a batch at a time, into PostgreSQL, the query table and the dead letters."""

from __future__ import annotations

from app.faust_app import app, command_topic
from app.faust_compat.stalls import resume_stalled_partitions
from app.settings import settings
from app.sink.ack_after_write import AckAfterWrite

stalls = resume_stalled_partitions(app, settings.command_topic, report_after_seconds=settings.partition_stall_seconds)


@app.agent(command_topic)
async def persist_timestamps(stream):
    """take → plan → dead-letter → write → table → ack: the steps are `BatchWriter`'s.

    `noack_take` leaves acknowledging to `AckAfterWrite`, which acks a batch
    only after all of it is written.
    """
    await app.schema_ready.wait()  # migrations run at start-up (PipelineApp.on_first_start)
    try:
        async with AckAfterWrite(app.services.batch_writer, ack=stream.ack, on_writing=stalls.writing,
                                 on_acked=stalls.progressed) as writes:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
                await writes.submit(events)
    finally:
        # After the last write; a restarted agent starts the table's producer again on its first write.
        await app.services.table_writer.stop()
