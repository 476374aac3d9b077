"""POST while the broker is down: 503 with Retry-After, never a 200.

Uses a throwaway broker of its own (same jars as the stack), so stopping it
does not disturb the other tests.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import deploy.local as stack
from tests.integration.conftest import wait_until
from tests.worker_process import REPO


async def test_post_with_the_broker_stopped_gives_503_then_recovers(own_broker, workers, http, namespace):
    worker = await workers(KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap, PUBLISH_TIMEOUT_SECONDS="3").wait_ready()
    acknowledged = []
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
        assert response.status == 200
        acknowledged.append((await response.json())["id"])

    await asyncio.to_thread(stack.stop_kafka, own_broker.state_dir)
    started = time.monotonic()
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
        assert response.status == 503
        assert response.headers["Retry-After"].isdigit()
        assert (await response.json())["error"] == "broker_unavailable"
    assert time.monotonic() - started < 10

    await asyncio.to_thread(stack.start_kafka, own_broker.state_dir, libs_dir=Path(
        os.environ.get("STACK_KAFKA_LIBS") or REPO / ".stack/kafka/libs"))

    async def accepted():
        async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
            if response.status == 200:
                acknowledged.append((await response.json())["id"])
                return True
            return False

    await wait_until(accepted, 60, "POST to succeed once the broker is back", interval=1)

    async def persisted():
        rows = namespace.query("SELECT id::text FROM timestamp_records WHERE id = ANY(%s::uuid[])", (acknowledged,))
        return len(rows) == len(acknowledged)

    await wait_until(persisted, 60, "every acknowledged command to be persisted")


async def test_sigterm_with_the_broker_down_ends_within_the_shutdown_timeout(own_broker, workers, namespace):
    worker = await workers(KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap, SHUTDOWN_TIMEOUT_SECONDS="5").wait_ready()
    await asyncio.to_thread(stack.stop_kafka, own_broker.state_dir)
    code, seconds = worker.terminate(30)
    assert code == 0 and seconds < 5 + 3, worker.log()[-3000:]
