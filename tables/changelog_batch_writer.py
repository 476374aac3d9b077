"""Writes many keys of a table at once: one changelog batch per partition, then the local store."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

from aiokafka import AIOKafkaProducer

from app.adapters.kafka_client import Kafka, client_options
from app.adapters.kafka_partitioner import key_partition
from app.faust_compat.table_store import ChangelogEvent, TableStoreUnwritable, apply_to_store, changelog_events
from app.observability import metrics

log = logging.getLogger(__name__)


class TableStoreHealth:
    """Whether the table's local store takes writes: the last write's outcome (readiness, /metrics)."""

    def __init__(self) -> None:
        self.error: TableStoreUnwritable | None = None
        self.since = 0.0

    def failed(self, error: TableStoreUnwritable) -> None:
        metrics.table_store_write_failures.inc()
        if self.error is None:
            self.since = time.monotonic()
            log.error("The table's local store refuses writes (%s); holding the batch, taking no more work "
                      "until a write succeeds (docs/operations.md#tablestoreunwritable)", error.strerror)
        self.error = error
        metrics.table_store_unwritable.set(1)

    def succeeded(self) -> None:
        if self.error is not None:
            log.warning("The table's local store takes writes again after %.0f s", time.monotonic() - self.since)
        self.error = None
        metrics.table_store_unwritable.set(0)


table_store_health = TableStoreHealth()


class ChangelogBatchWriter:
    """Writes many keys of the table at once, as a changelog batch per partition.

    `table[key] = value` sends one changelog message per key through Faust's
    buffered producer, about 80 CPU µs a key here. This produces the same
    messages (same partitioner, same key and value bytes) as one batch per
    partition, waits until the broker has them, then applies them to the local
    store the way table recovery does, persisted offsets included.
    """

    def __init__(self, table, kafka: Kafka, partitions: int, owned_partitions=None) -> None:
        self.table = table
        self.topic = table.changelog_topic.get_topic_name()
        self.partitions = partitions
        self._owned = owned_partitions or (lambda: set(range(partitions)))
        self.kafka = kafka
        self._producer: AIOKafkaProducer | None = None

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Write every (key, value), each in its key's changelog partition; returns once durable."""
        if not items:
            return
        await self._start()
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in items:
            by_partition.setdefault(key_partition(key, self.partitions), []).append((key, value))
        sent = await asyncio.gather(*(self._send(partition, batch) for partition, batch in by_partition.items()))
        owned = self._owned()
        try:
            apply_to_store(self.table,
                           [event for events in sent for event in events if event.message.partition in owned])
        except TableStoreUnwritable as exc:
            table_store_health.failed(exc)  # the caller retries the batch (app.sink.batch_writer)
            raise
        table_store_health.succeeded()

    async def _send(self, partition: int, items: list[tuple[bytes, bytes]]) -> list[ChangelogEvent]:
        events: list[ChangelogEvent] = []
        start = 0
        while start < len(items):
            batch = self._producer.create_batch()
            end = start
            while end < len(items) and batch.append(key=items[end][0], value=items[end][1], timestamp=None):
                end += 1
            if end == start:
                raise ValueError(f"a table value of {len(items[start][1])} bytes does not fit a changelog batch")
            metadata = await (await self._producer.send_batch(batch, self.topic, partition=partition))
            events.extend(changelog_events(self.topic, partition, metadata.offset, items[start:end]))
            start = end
        return events

    async def _start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_options(self.kafka), acks="all", linger_ms=0,
                max_batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # a failed start leaves connections behind; the next write starts afresh
                raise
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
