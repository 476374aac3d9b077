"""A bare Faust agent with the worker's Faust settings: `noack_take` + ack, nothing else.

    BENCH_EVENTS=200000 BENCH_RESULT_FILE=/tmp/bare.json \\
        python -m faust -A bench.bare_faust worker --web-port 6099

The floor the project's worker is compared with in `make bench`: the same
faust-streaming, the same App settings (app/faust_compat/options.py: the manual-ack
stream, broker and producer settings) and the same Faust fixes, batching like
the real agent (BATCH_SIZE, BATCH_MAX_WAIT_SECONDS), with Faust's default
Monitor. It processes nothing: each event of a batch is acknowledged.

When BENCH_EVENTS events have been acknowledged, it writes to BENCH_RESULT_FILE
one JSON object measured in this process: events and seconds from the first
batch to the last event, and the CPU time (user + system, all threads) this
process spent in that interval. Then it idles until it is stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

from app import faust_compat
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
