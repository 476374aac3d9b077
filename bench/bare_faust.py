"""A bare Faust agent with the worker's Faust settings: `noack_take` + ack, nothing else.

    BENCH_EVENTS=200000 BENCH_RESULT_FILE=/tmp/bare.json \\
        python -m faust -A bench.bare_faust worker --web-port 6099

The floor the project's worker is compared with in `make bench`: the same
faust-streaming, the same App settings (app/faust_compat/options.py: the manual-ack
stream, broker and producer settings) and the same Faust fixes, batching like
the real agent (BATCH_SIZE, BATCH_MAX_WAIT_SECONDS), with Faust's default
Monitor. It processes nothing: each event of a batch is acknowledged.

It also serves the v1 API's two paths with nothing of ours on them, the floors
the project's HTTP steps are compared with (bench/http_load.py):
- `GET /api/v1/timestamp/{id}` answers one fixed record of the table's size:
  Faust's web layer (aiohttp, Faust's view dispatch) alone;
- `POST /api/v1/timestamp/{timestamp}` publishes a fixed command of a real one's
  size to the topic this agent consumes, with a producer set like the worker's
  (acks=all, idempotent, no linger), and answers its id once the broker
  acknowledged it: Faust's web layer, aiokafka's publish, and this agent
  taking what was posted.

When BENCH_EVENTS events have been acknowledged, it writes to BENCH_RESULT_FILE
one JSON object measured in this process: events and seconds from the first
batch to the last event, and the CPU time (user + system, all threads) this
process spent in that interval. Then it idles until it is stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import faust
from aiokafka import AIOKafkaProducer
from faust.web import Request, Response, View

from app import faust_compat
from app.adapters.kafka_client import KafkaConnection, client_options
from app.adapters.kafka_partitioner import kafka_partitioner
from app.domain.commands import encode_command
from app.domain.records import SourcePosition, TimestampRecord
from app.faust_compat import fixes
from app.faust_compat.options import faust_options
from app.settings import settings

TARGET = int(os.environ.get("BENCH_EVENTS", "0"))
RESULT_FILE = os.environ.get("BENCH_RESULT_FILE")

app = faust.App(settings.app_id, **faust_options(settings))
app.on_worker_init.connect(lambda sender, **kwargs: faust_compat.install())  # the worker's fixes, at start
topic = app.topic(settings.command_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw", partitions=settings.command_topic_partitions)


class Progress:
    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first: tuple[float, float, int] | None = None  # wall, cpu, events of the first batch
        self.done = False

    def add(self, events: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.count += events
        if self.first is None:
            self.first = (now, cpu, events)
        if not self.done and self.target and self.count >= self.target:
            self.done = True
            wall0, cpu0, events0 = self.first
            self.write({"events": self.count - events0, "seconds": now - wall0, "cpu_seconds": cpu - cpu0,
                        "total_events": self.count, "stream_iterator": fixes.stream_iterator()})

    @staticmethod
    def write(result: dict) -> None:
        if RESULT_FILE:
            path = Path(RESULT_FILE)
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(result))
            partial.rename(path)


progress = Progress(TARGET)


@app.agent(topic)
async def take_and_ack(stream):
    async for events in stream.noack_take(settings.batch_size, within=settings.batch_max_wait_seconds):
        for event in events:
            await stream.ack(event)
        progress.add(len(events))


# A record as the table serves it, the same bytes as a real answer's.
FLOOR_RECORD = TimestampRecord(
    id=uuid.UUID("9b2f3c1e-6a4d-4e8b-9f00-1d2c3b4a5e6f"), event_timestamp=datetime(2024, 2, 29, 12, tzinfo=timezone.utc),
    received_at=datetime(2026, 12, 6, 6, 0, 0, 123456, tzinfo=timezone.utc),
    processed_at=datetime(2026, 12, 6, 6, 0, 0, 234567, tzinfo=timezone.utc),
    correlation_id="ING:0c8e1f4a-2b3d-4c5e-8f60-718293a4b5c6",
    source=SourcePosition(topic="timestamp.command.v1", partition=3, offset=123456),
).as_json()


# A command as the worker publishes one, encoded once here.
FLOOR_COMMAND = encode_command(uuid.UUID("9b2f3c1e-6a4d-4e8b-9f00-1d2c3b4a5e6f"), "2024-02-29T12:00:00Z",
                               datetime(2026, 12, 6, 6, 0, 0, 123456, tzinfo=timezone.utc))


class FloorPublisher:
    """One producer set like the worker's command publisher, started on the first POST."""

    producer: AIOKafkaProducer | None = None
    lock = asyncio.Lock()

    @classmethod
    async def started(cls) -> AIOKafkaProducer:
        async with cls.lock:
            if cls.producer is None:
                producer = AIOKafkaProducer(**client_options(KafkaConnection.from_settings(settings)), acks="all",
                                            enable_idempotence=True, linger_ms=0, partitioner=kafka_partitioner)
                await producer.start()
                cls.producer = producer
        return cls.producer


@app.page("/api/v1/timestamp/{value}")
class FixedRecordView(View):
    """The project's two API paths with nothing of ours on them."""

    async def get(self, request: Request, value: str) -> Response:
        return self.bytes(FLOOR_RECORD, content_type="application/json")

    async def post(self, request: Request, value: str) -> Response:
        command_id = str(uuid.uuid4())
        producer = FloorPublisher.producer or await FloorPublisher.started()
        await producer.send_and_wait(topic.get_topic_name(), FLOOR_COMMAND, key=command_id.encode())
        return self.json({"id": command_id})
