"""Reading a topic's offset ranges, [start, stop) per partition, in batches.

The one way the tools read Kafka: the replay and its bulk load, the audit's
repair and gap check, and the dead-letter commands. Partitions are assigned
explicitly and there is no consumer group (group_id=None): nothing is
committed, and the live group's offsets never move.

    async for batch in read_topic(kafka, topic):  # beginning -> end offsets as of now
        ...

    async with TopicReader(kafka, topic) as reader:
        bounds = await reader.bounds(partitions, starts={0: 120})
        async for batch in reader.batches(bounds):
            ...
"""

from __future__ import annotations

from datetime import datetime
from typing import AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from app.adapters.kafka_client import Kafka, client_options
from app.adapters.topics import topic_partitions

Bounds = dict[int, tuple[int, int]]  # partition -> [start, stop) offsets


class ReadStalled(RuntimeError):
    """Kafka returned nothing, and no position moved, for `idle_polls` polls in a row."""


def reader_consumer(kafka: Kafka, batch_size: int | None = None,
                    isolation_level: str = "read_uncommitted") -> AIOKafkaConsumer:
    # No group_id: explicit assignment, nothing committed, the live group untouched.
    return AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", max_poll_records=batch_size,
                            isolation_level=isolation_level)


class TopicReader:
    """Offset ranges of one topic, read in batches of at most `batch_size` records.

    Its own consumer (started and stopped by `async with`), or `over` one the caller runs.
    """

    POLL_MS = 1000  # how long a poll waits for the first record of a batch

    def __init__(self, kafka: Kafka, topic: str, *, batch_size: int = 1000,
                 isolation_level: str = "read_uncommitted", idle_polls: int | None = None) -> None:
        self.consumer = reader_consumer(kafka, batch_size, isolation_level)
        self.topic = topic
        self.batch_size = batch_size
        self.idle_polls = idle_polls

    @classmethod
    def over(cls, consumer: AIOKafkaConsumer, topic: str, *, batch_size: int = 1000,
             idle_polls: int | None = None) -> "TopicReader":
        """A reader using a consumer the caller started (and stops)."""
        reader = cls.__new__(cls)
        reader.consumer, reader.topic, reader.batch_size, reader.idle_polls = consumer, topic, batch_size, idle_polls
        return reader

    async def __aenter__(self) -> "TopicReader":
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.consumer.stop()

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in partitions]

    async def beginning_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        found = await self.consumer.beginning_offsets(self._tps(partitions))
        return {tp.partition: offset for tp, offset in found.items()}

    async def end_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        found = await self.consumer.end_offsets(self._tps(partitions))
        return {tp.partition: offset for tp, offset in found.items()}

    async def offsets_at(self, partitions: Iterable[int], moment: datetime) -> dict[int, int]:
        """First offset at or after `moment` per partition (the end offset when there is none)."""
        partitions = list(partitions)
        tps = self._tps(partitions)
        found = await self.consumer.offsets_for_times({tp: int(moment.timestamp() * 1000) for tp in tps})
        ends = await self.end_offsets(partitions)
        return {tp.partition: found[tp].offset if found.get(tp) else ends[tp.partition] for tp in tps}

    async def bounds(self, partitions: Iterable[int], starts: dict[int, int] | None = None,
                     stops: dict[int, int] | None = None) -> Bounds:
        """[start, stop) per partition: from `starts` (the beginning by default; never before it) up to
        `stops` (the end offsets as of this call by default; never after them)."""
        partitions = list(partitions)
        beginnings, ends = await self.beginning_offsets(partitions), await self.end_offsets(partitions)
        starts, stops = starts or {}, stops or {}
        return {p: (max(beginnings[p], starts.get(p, beginnings[p])), min(ends[p], stops.get(p, ends[p])))
                for p in partitions}

    async def batches(self, bounds: Bounds) -> AsyncIterator[list[ConsumerRecord]]:
        """The records of [start, stop) of each partition in `bounds`, a batch at a time, in offset order per partition.

        A batch is at most `batch_size` records: whatever is buffered once the
        first arrived. Offsets that hold no record (transaction markers,
        compacted away) are simply never returned. Raises ReadStalled after
        `idle_polls` empty polls without progress, when set.
        """
        remaining = {TopicPartition(self.topic, p): stop for p, (start, stop) in bounds.items() if start < stop}
        if not remaining:
            return
        consumer = self.consumer
        consumer.assign(list(remaining))
        for tp in remaining:  # explicit seeks: seek_to_beginning() then position() was seen to report the end
            consumer.seek(tp, bounds[tp.partition][0])
        positions = {tp: bounds[tp.partition][0] for tp in remaining}
        idle = 0
        while remaining:
            batch: list[ConsumerRecord] = []
            while remaining and len(batch) < self.batch_size:
                timeout_ms = 0 if batch else self.POLL_MS
                fetched = await consumer.getmany(*remaining, timeout_ms=timeout_ms,
                                                 max_records=self.batch_size - len(batch))
                for tp, records in fetched.items():
                    stop = remaining.get(tp, -1)
                    batch.extend(record for record in records if record.offset < stop)
                moved = False
                for tp in list(remaining):
                    position = await consumer.position(tp)
                    moved = moved or position > positions[tp]
                    positions[tp] = position
                    if position >= remaining[tp]:
                        del remaining[tp]
                if timeout_ms:
                    idle = 0 if fetched or moved else idle + 1
                    if self.idle_polls and idle >= self.idle_polls:
                        tp = min(remaining, key=lambda tp: tp.partition)
                        raise ReadStalled(f"no progress reading {self.topic}[{tp.partition}] at offset {positions[tp]}")
                if not fetched and batch:
                    break
            if batch:
                yield batch


async def read_topic(kafka: Kafka, topic: str) -> AsyncIterator[list[ConsumerRecord]]:
    """Batches of every partition of `topic`, from its beginning up to the end offsets as of the call;
    nothing when the topic does not exist."""
    partitions = await topic_partitions(kafka, topic)
    if not partitions:
        return
    async with TopicReader(kafka, topic) as reader:
        bounds = await reader.bounds(partitions)
        async for batch in reader.batches(bounds):
            yield batch
