"""The producer of HTTP commands: plain (never transactional), idempotent, acks=all.

Kept apart from Faust's producer so that a POST is answered only once its
command is durably and visibly in the topic whatever PROCESSING_GUARANTEE is:
under exactly_once Faust's producer would put it in a transaction that only
commits with the consumer's offsets, so a 200 could precede (or outlive) an
invisible command.

At most `max_in_flight` publishes await the broker at once: past that the
worker is at capacity (or the broker is slow), and a POST is better refused at
once (`PublisherOverloaded`, answered 503 + Retry-After) than queued until
every client times out.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from app.adapters.kafka_client import Kafka, client_options
from app.adapters.kafka_partitioner import kafka_partitioner


class PublisherOverloaded(Exception):
    """`max_in_flight` publishes are awaiting the broker already."""


class CommandPublisher:
    def __init__(self, kafka: Kafka, request_timeout_seconds: float, max_in_flight: int) -> None:
        self.kafka = kafka
        self.request_timeout_ms = int(request_timeout_seconds * 1000)
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def saturated(self) -> bool:
        """True when a publish now would be refused."""
        return self.in_flight >= self.max_in_flight

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                # linger_ms=0: a lone command is sent at once (a 1 ms linger doubled
                # the median POST here); under load the sender batches anyway what
                # accumulates while a partition's previous request is in flight.
                producer = AIOKafkaProducer(
                    **client_options(self.kafka), acks="all", enable_idempotence=True,
                    linger_ms=0, request_timeout_ms=self.request_timeout_ms, partitioner=kafka_partitioner,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> RecordMetadata:
        """Send and wait for the broker's acknowledgement; PublisherOverloaded at once when saturated."""
        if self.saturated:
            raise PublisherOverloaded(f"{self.in_flight} publishes in flight")
        self.in_flight += 1
        try:
            producer = self._producer if self._producer is not None else await self._started()
            delivery = await producer.send(topic, value, key=key, headers=headers)
            return await delivery
        finally:
            self.in_flight -= 1

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
