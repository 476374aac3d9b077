"""Disaster recovery: rebuild PostgreSQL (or the query table) from the command topic.

The replay reads with explicit partition assignment and no consumer group, so
it never moves the live group's offsets. `replay` writes the live path's rows
with the bulk loader (`app.ops.bulk_load`: COPY into a staging table, partition
groups in parallel); `replay_ranges` (the audit's repair) writes through the
live path's sink. Both are idempotent: a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaProducer, TopicPartition
from tqdm import tqdm

from app.adapters.kafka_client import Kafka, client_options
from app.adapters.database import Database
from app.adapters.topic_reader import TopicReader
from app.adapters.topics import topic_partitions
from app.domain.batch_plan import ConsumedMessage
from app.domain.commands import DecodeLimits
from app.domain.records import SourcePosition, key_of
from app.domain.rfc3339 import InvalidTimestamp, parse_rfc3339
from app.ops import bulk_load
from app.ops.deferred_indexes import DEFERRED_INDEXES, defer_secondary_indexes, rebuild_deferred_indexes
from app.sink.batch_writer import BatchWriter, no_dead_letters, no_table

log = logging.getLogger(__name__)

BULK_BATCH_SIZE = 5000  # events per transaction of the bulk load
BULK_CONNECTIONS = 2  # partition groups read and written in parallel, one connection each


class ReplayError(ValueError):
    """A replay argument that cannot be used; the message says which."""


@dataclass
class ReplaySummary:
    events_read: int = 0
    rows_inserted: int = 0
    rows_already_present: int = 0
    invalid: int = 0
    failed: int = 0
    seconds: float = 0.0
    events_already_recorded: int | None = None  # positions with a processed_events row already (bulk load only)
    groups: int | None = None  # partition groups (connections) of the bulk load
    indexes_built: list[str] = field(default_factory=list)  # secondary indexes built after the load
    index_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events_read / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        lines = [
            f"events read:          {self.events_read}",
            f"rows inserted:        {self.rows_inserted}",
            f"rows already present: {self.rows_already_present}",
            f"invalid:              {self.invalid}",
            f"failed:               {self.failed}",
        ]
        if self.events_already_recorded is not None:
            lines.append(f"events already recorded: {self.events_already_recorded} (processed_events rows"
                         " present before; skipped)")
        if self.indexes_built:
            lines.append(f"indexes built after:  {len(self.indexes_built)} in {self.index_seconds:.2f} s"
                         f" ({', '.join(self.indexes_built)})")
        groups = f", {self.groups} partition groups" if self.groups else ""
        lines.append(f"seconds:              {self.seconds:.2f} ({self.rate:.0f} events/s{groups})")
        return lines


def parse_start(text: str) -> str | datetime | dict[int, int]:
    """`earliest`, an RFC 3339 timestamp, or per-partition offsets `0:120,3:88`."""
    if text == "earliest":
        return text
    if ":" in text and "T" not in text.upper():
        try:
            pairs = (item.split(":") for item in text.split(","))
            return {int(partition): int(offset) for partition, offset in pairs}
        except ValueError:
            raise ReplayError(f"--from {text!r}: offsets must look like 0:120,3:88") from None
    return _timestamp("--from", text)


def parse_stop(text: str) -> str | datetime:
    """`latest` (the end offsets when the replay starts) or an RFC 3339 timestamp."""
    return text if text == "latest" else _timestamp("--to", text)


def _timestamp(option: str, text: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except InvalidTimestamp as exc:
        raise ReplayError(f"{option} {text!r}: {exc}; use earliest/latest, offsets or RFC 3339") from None


async def replay(kafka: Kafka, topic: str, database: Database, start="earliest", stop="latest",
                 batch_size: int = BULK_BATCH_SIZE, progress: bool = True, limits: DecodeLimits = DecodeLimits(),
                 dead_letter_topic: str | None = None, connections: int = BULK_CONNECTIONS,
                 defer_indexes: bool = True) -> ReplaySummary:
    """Replay [start, stop) of every partition of `topic` into `database`: the live path's rows, bulk-loaded.

    `connections` partition groups are read and written in parallel, each
    `batch_size` events per transaction. Into empty tables the secondary
    indexes are built after the load (`defer_indexes`); a replay that did not
    complete leaves them to the next one, which builds them. Dead letters are
    sent only when `dead_letter_topic` is named: the live path already sent
    those of a topic it processed.
    """
    await database.migrate()
    summary = ReplaySummary()
    started = asyncio.get_running_loop().time()
    try:
        partitions = await topic_partitions(kafka, topic)
        if not partitions:
            raise ReplayError(f"topic {topic!r} does not exist")
        unknown = set(start) - set(partitions) if isinstance(start, dict) else set()
        if unknown:
            raise ReplayError(f"--from names partitions {sorted(unknown)} that {topic} does not have")
        async with TopicReader(kafka, topic) as reader:  # the bulk loader has readers of its own
            if start == "earliest":
                starts = None
            elif isinstance(start, dict):
                starts = start
            else:
                starts = await reader.offsets_at(partitions, start)
            stops = None if stop == "latest" else await reader.offsets_at(partitions, stop)
            spans = await reader.bounds(partitions, starts, stops)
        bounds = {TopicPartition(topic, p): span for p, span in spans.items()}
        deferred = []
        if defer_indexes:
            deferred = await asyncio.to_thread(defer_secondary_indexes, database.url)
            if deferred:
                log.info("Empty target: secondary indexes %s are built after the load", ", ".join(deferred))
        try:
            async with _sink(kafka, topic, database, limits, dead_letter_topic) as sink:
                counts = await bulk_load.load(kafka, topic, database.url, bounds, sink,
                                              connections=connections, batch_size=batch_size, limits=limits,
                                              progress=progress)
        except BaseException:
            if deferred:
                log.warning("The replay did not complete: secondary indexes %s stay dropped (listed in %s) until"
                            " a replay completes; run it again", ", ".join(deferred), DEFERRED_INDEXES)
            raise
        # Also the indexes an interrupted replay deferred: this run completed what it left.
        building = asyncio.get_running_loop().time()
        summary.indexes_built = await asyncio.to_thread(rebuild_deferred_indexes, database.url)
        summary.index_seconds = asyncio.get_running_loop().time() - building
        summary.events_read = counts.events
        summary.rows_inserted = counts.rows_inserted
        summary.rows_already_present = counts.rows_already_present
        summary.invalid = counts.invalid
        summary.failed = counts.failed
        summary.events_already_recorded = counts.events_already_recorded
        summary.groups = len(bulk_load.partition_groups(list(bounds), connections))
    finally:
        summary.seconds = asyncio.get_running_loop().time() - started
    return summary


async def replay_ranges(kafka: Kafka, topic: str, database: Database,
                        ranges: dict[int, list[tuple[int, int]]], batch_size: int = 1000,
                        progress: bool = True, limits: DecodeLimits = DecodeLimits(),
                        dead_letter_topic: str | None = None) -> ReplaySummary:
    """Replay exactly the given [start, stop) ranges per partition (the audit's repair); idempotent."""
    await database.migrate()
    summary = ReplaySummary()
    started = asyncio.get_running_loop().time()
    ranges = {p: sorted(spans) for p, spans in ranges.items() if spans}
    try:
        total = sum(stop - start for spans in ranges.values() for start, stop in spans)
        async with (_sink(kafka, topic, database, limits, dead_letter_topic) as sink,
                    TopicReader(kafka, topic, batch_size=batch_size) as reader):
            with tqdm(total=total, unit="event", disable=not progress, desc=f"replay {topic}") as bar:
                # Round i replays the i-th range of every partition that has one.
                for i in range(max(map(len, ranges.values()), default=0)):
                    bounds = {p: spans[i] for p, spans in ranges.items() if i < len(spans)}
                    async for records in reader.batches(bounds):
                        messages = [ConsumedMessage(SourcePosition(topic, r.partition, r.offset), r.value, r.headers)
                                    for r in records]
                        await _write(sink, messages, summary, bar)
    finally:
        summary.seconds = asyncio.get_running_loop().time() - started
    return summary


@contextlib.asynccontextmanager
async def _sink(kafka: Kafka, topic: str, database: Database, limits: DecodeLimits,
                dead_letter_topic: str | None):
    """The live path's sink, without the query table; dead letters only when a topic is named."""
    if dead_letter_topic is None:
        yield BatchWriter(database=database, send_dead_letters=no_dead_letters, update_table=no_table, topic=topic,
                          limits=limits)
        return
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", max_request_size=3 * 1024 * 1024)
    await producer.start()

    async def send(letters) -> None:
        deliveries = [await producer.send(dead_letter_topic, letter.value, key=letter.key, headers=letter.headers)
                      for letter in letters]
        await asyncio.gather(*deliveries)

    try:
        yield BatchWriter(database=database, send_dead_letters=send, update_table=no_table, topic=topic,
                          limits=limits)
    finally:
        await producer.stop()


async def _write(sink: BatchWriter, messages: list[ConsumedMessage], summary: ReplaySummary, bar) -> None:
    """Write a batch through the live path's sink, and count it."""
    outcome = await sink.write(messages)
    summary.events_read += len(messages)
    summary.rows_inserted += outcome.inserted
    summary.invalid += outcome.invalid
    summary.failed += outcome.failed
    summary.rows_already_present += len(messages) - outcome.inserted - outcome.invalid - outcome.failed
    bar.update(len(messages))


async def rebuild_table(kafka: Kafka, changelog_topic: str, database: Database,
                        batch_size: int = 1000, progress: bool = True) -> int:
    """Write every PostgreSQL record to the table's changelog topic; returns the count.

    Keys and values are what the agent writes, and the default partitioner puts
    each key in the partition the table expects (`use_partitioner=True`).
    Restart the workers afterwards: they recover the table from the changelog.
    """
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", linger_ms=20)
    await producer.start()
    written = 0
    try:
        with tqdm(unit="record", disable=not progress, desc=f"rebuild {changelog_topic}") as bar:
            async for records in database.iter_records(batch_size):
                await asyncio.gather(*[
                    await producer.send(changelog_topic, key=key_of(r.id), value=r.as_json())
                    for r in records
                ])
                written += len(records)
                bar.update(len(records))
    finally:
        await producer.stop()
    return written
