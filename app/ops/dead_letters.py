"""The dead-letter topic's operator tools: read it, and publish its messages to the command topic again."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from app.adapters.kafka_client import Kafka, client_options
from app.adapters.topic_reader import read_topic
from app.domain.dead_letters import CORRELATION_ID


async def read_dead_letters(kafka: Kafka, topic: str) -> list:
    """Every record of the dead-letter topic (up to its end offsets when called), oldest first per partition."""
    records = [record async for batch in read_topic(kafka, topic) for record in batch]
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def republish(kafka: Kafka, records: list, command_topic: str) -> int:
    """Publish dead letters to the command topic again, with their key and correlation id."""
    producer = AIOKafkaProducer(**client_options(kafka), acks="all")
    await producer.start()
    try:
        for record in records:
            headers = [(name, value) for name, value in record.headers or () if name == CORRELATION_ID]
            await producer.send_and_wait(command_topic, record.value, key=record.key, headers=headers)
    finally:
        await producer.stop()
    return len(records)
