"""Bulk load for the replay: the live path's rows, written with COPY, partition groups in parallel.

Per batch, `plan_batch` (the agent's decode, validation, enrichment and
in-batch de-duplication) makes the records and the skipped events, and a
StageWriter (`app.ops.staging`) copies them into a staging table and moves them
on to both tables in one transaction, deciding persisted/duplicate as
`Database.persist_batch` does: a crash loses whole batches only, and a re-run
re-writes nothing that is there (idempotent, so resumable by re-running).

Partitions are split into groups; each group has its own Kafka reader
(`app.adapters.topic_reader`) and its own PostgreSQL connection, driven from a thread
of its own, so decoding the next batch overlaps writing this one and the
groups write in parallel. Within a group batches are written in order, so the
first message of a command id in a partition is the one persisted, as in the
live path.

A batch that fails for a reason other than the database being unreachable is
handed to the live path's sink (`BatchWriter.write`), which isolates the
failing messages as the live worker does (recorded `failed`; dead-lettered
when the replay sends dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from app.adapters.kafka_client import Kafka
from app.adapters.topic_reader import TopicReader
from app.domain.batch_plan import BatchPlan, ConsumedMessage, plan_batch
from app.domain.commands import DecodeLimits
from app.domain.records import SourcePosition, Status
from app.domain.rfc3339 import utc_now
from app.ops.staging import StageWriter, positions_present, stage_rows
from app.sink.batch_writer import BatchWriter

log = logging.getLogger(__name__)

Bounds = dict[TopicPartition, tuple[int, int]]  # [start, stop) per partition


@dataclass
class BulkCounts:
    """What writing some batches came to."""

    events: int = 0
    rows_inserted: int = 0  # timestamp_records
    rows_already_present: int = 0  # messages whose record was not inserted (duplicates), invalid and failed excluded
    events_already_recorded: int = 0  # positions that already had their processed_events row
    invalid: int = 0
    failed: int = 0
    isolated_batches: int = 0  # batches handed to the live path's sink after a failure

    def add(self, other: "BulkCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def partition_groups(partitions: list[TopicPartition], groups: int) -> list[list[TopicPartition]]:
    """Partitions dealt round-robin into at most `groups` non-empty groups."""
    groups = max(1, min(groups, len(partitions)))
    dealt = [sorted(partitions, key=lambda tp: tp.partition)[i::groups] for i in range(groups)]
    return [group for group in dealt if group]


def group_name(group: list[TopicPartition]) -> str:
    return "p" + ",".join(str(tp.partition) for tp in group)


@dataclass
class GroupLoad:
    """One partition group's reading and writing."""

    kafka: Kafka
    topic: str
    bounds: Bounds
    writer: StageWriter
    sink: BatchWriter
    limits: DecodeLimits
    batch_size: int
    bar: object
    counts: BulkCounts = field(default_factory=BulkCounts)

    async def run(self) -> BulkCounts:
        if all(start >= stop for start, stop in self.bounds.values()):
            return self.counts
        pending: asyncio.Future | None = None
        async with TopicReader(self.kafka, self.topic, batch_size=self.batch_size) as reader:
            batches = reader.batches({tp.partition: span for tp, span in self.bounds.items()})
            try:
                async for records in batches:
                    messages = [ConsumedMessage(SourcePosition(self.topic, r.partition, r.offset), r.value, r.headers)
                                for r in records]
                    plan = plan_batch(messages, processed_at=utc_now(), limits=self.limits)
                    rows = stage_rows(plan)
                    if pending is not None:
                        await pending  # batches of a group are written in order
                    pending = asyncio.ensure_future(self._write(messages, plan, rows))
                if pending is not None:
                    await pending
            finally:
                await batches.aclose()
                if pending is not None and not pending.done():
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
        return self.counts

    async def _write(self, messages: list[ConsumedMessage], plan: BatchPlan, rows: str) -> None:
        invalid = sum(1 for e in plan.skipped if e.status == Status.INVALID)
        batch = BulkCounts(events=len(messages), invalid=invalid)
        try:
            inserted, logged = await self.writer.write(rows)
        except Exception as exc:
            log.warning("A replay batch of %d messages failed (%s: %s); writing it through the live path's sink,"
                        " which isolates the failing messages", len(messages), type(exc).__name__, exc)
            batch.events_already_recorded = await self.writer.run(positions_present, self.topic, messages)
            outcome = await self.sink.write(messages)
            inserted, batch.invalid, batch.failed = outcome.inserted, outcome.invalid, outcome.failed
            batch.isolated_batches = 1
        else:
            # After the rows, so that the fallback above (whose sink dead-letters
            # them itself) does not send them twice; a re-run sends them again anyway.
            await self.sink.dead_letter_invalid(messages, plan)
            batch.events_already_recorded = len(messages) - logged
        batch.rows_inserted = inserted
        batch.rows_already_present = len(messages) - inserted - batch.invalid - batch.failed
        self.counts.add(batch)
        self.bar.update(len(messages))


async def load(kafka: Kafka, topic: str, database_url: str, bounds: Bounds, sink: BatchWriter,
               *, connections: int, batch_size: int, limits: DecodeLimits, progress: bool) -> BulkCounts:
    """Replay `bounds` into the database with `connections` partition groups in parallel."""
    from tqdm import tqdm

    groups = partition_groups(list(bounds), connections)
    writers = [StageWriter(database_url, group_name(group)) for group in groups]
    bars = [
        tqdm(total=sum(max(0, bounds[tp][1] - bounds[tp][0]) for tp in group), unit="event", unit_scale=True,
             desc=f"replay {group_name(group)}", position=i, disable=not progress, leave=True, smoothing=0.1)
        for i, group in enumerate(groups)
    ]
    loads = [
        GroupLoad(kafka, topic, {tp: bounds[tp] for tp in group}, writer, sink, limits, batch_size,
                  bar)
        for group, writer, bar in zip(groups, writers, bars)
    ]
    total = BulkCounts()
    started = time.monotonic()
    try:
        try:
            async with asyncio.TaskGroup() as running:  # one group failing cancels the others
                tasks = [running.create_task(group.run()) for group in loads]
        except ExceptionGroup as failed:
            raise failed.exceptions[0]  # what the caller would have seen from one group
        for task in tasks:
            total.add(task.result())
    finally:
        for bar in bars:
            bar.close()
        for writer in writers:
            await writer.close()
    log.info("Bulk load of %d events in %.1f s", total.events, time.monotonic() - started)
    return total
