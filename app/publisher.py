"""The producer of HTTP commands: plain (never transactional), idempotent, acks=all.

Kept apart from Faust's producer so that a POST is answered only once its
command is durably and visibly in the topic whatever PROCESSING_GUARANTEE is:
under exactly_once Faust's producer would put it in a transaction that only
commits with the consumer's offsets, so a 200 could precede (or outlive) an
invisible command.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata


class CommandPublisher:
    def __init__(self, bootstrap_servers: str, request_timeout_seconds: float) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.request_timeout_ms = int(request_timeout_seconds * 1000)
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers, acks="all", enable_idempotence=True,
                    linger_ms=1, request_timeout_ms=self.request_timeout_ms,
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def publish(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> RecordMetadata:
        """Send and wait for the broker's acknowledgement."""
        producer = await self._started()
        delivery = await producer.send(topic, value, key=key, headers=headers)
        return await delivery

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
