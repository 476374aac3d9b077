"""Fewer, fuller fetches (`app.faust_compat.fixes.batch_fetches`), against the real broker:
the broker holds a fetch until it has KAFKA_FETCH_MIN_BYTES or KAFKA_FETCH_MAX_WAIT_SECONDS passed."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters.topics import ensure_topic
from app.faust_compat.fixes import batch_fetches

HELD_SECONDS = 1.5


async def _seconds_to_first_record(bootstrap_servers: str, topic: str, **batching) -> float:
    """From a started consumer to its first fetched record, which was in the topic before it started."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    if batching:
        batch_fetches(consumer, **batching)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        started = time.monotonic()
        while not await consumer.getmany(timeout_ms=100):
            assert time.monotonic() - started < 10, "no record fetched in 10 s"
        return time.monotonic() - started
    finally:
        await consumer.stop()


async def test_the_broker_holds_a_fetch_for_more_bytes_until_the_wait_is_over(bootstrap_servers, producer, namespace):
    topic = f"test.fetch-batching.{namespace.suffix}"  # deleted after the test
    await ensure_topic(bootstrap_servers, topic, 1, 1, {})
    await producer.send_and_wait(topic, b"one small record", partition=0)

    at_once = await _seconds_to_first_record(bootstrap_servers, topic)  # aiokafka's default: 1 byte is enough
    held = await _seconds_to_first_record(bootstrap_servers, topic, min_bytes=1024 * 1024,
                                          max_wait_seconds=HELD_SECONDS)
    assert at_once < HELD_SECONDS * 0.6, at_once
    assert held >= HELD_SECONDS * 0.8, held  # the 16-byte record waited at the broker for a full megabyte
    enough = await _seconds_to_first_record(bootstrap_servers, topic, min_bytes=1, max_wait_seconds=HELD_SECONDS)
    assert enough < HELD_SECONDS * 0.6, enough  # with the bytes there, the broker does not wait
