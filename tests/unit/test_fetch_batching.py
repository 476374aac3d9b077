"""Fewer, fuller fetches: every consumer Faust creates for a worker gets the batching settings."""

from __future__ import annotations

import inspect

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.faust_compat import fixes as faust_fixes


async def test_each_worker_consumer_faust_creates_is_set_to_batch_fetches(monkeypatch):
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer",
                        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)  # restored after the test
    app = faust.App("fetch-batching-check", broker="kafka://127.0.0.1:1", store="memory://")
    thread = app.consumer._thread

    unchanged = thread._create_worker_consumer(app.transport)
    assert (unchanged._fetch_min_bytes, unchanged._fetch_max_wait_ms) == (1, 1500)  # Faust's own choice

    faust_fixes.install_fetch_batching(min_bytes=65536, max_wait_seconds=0.05)
    batched = thread._create_worker_consumer(app.transport)
    assert isinstance(batched, aiokafka.AIOKafkaConsumer)
    assert (batched._fetch_min_bytes, batched._fetch_max_wait_ms) == (65536, 50)
    assert batched._group_id == "fetch-batching-check"  # the rest is still Faust's consumer
    for consumer in (unchanged, batched):
        await consumer.stop()


def test_aiokafka_still_hands_these_two_values_to_its_fetcher_at_start():
    # batch_fetches sets them between construction and start(); start() must still be where they are read.
    start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_min_bytes=self._fetch_min_bytes" in start
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start

