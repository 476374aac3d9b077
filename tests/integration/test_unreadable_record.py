"""A record no reader can decode stops its partition in front of it, visibly, and the worker stays up.

No such record is known once kafka_record_reader reads header names that are
not UTF-8, so tests/faulty_worker.py makes the tolerant reader refuse one too.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import committed_offsets, wait_until
from tests.kafka_records import send_raw

BLOCKED_PARTITION = 3


def command(command_id: str) -> bytes:
    return json.dumps({"command_id": command_id, "event_timestamp": "2020-01-01T00:00:00Z"}).encode()


async def test_an_unreadable_record_blocks_its_partition_and_says_where(workers, namespace, bootstrap_servers, http):
    await namespace.create_topic(8)
    before, behind, elsewhere = (str(uuid.uuid4()) for _ in range(3))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(namespace.topic, command(before), key=b"k", partition=BLOCKED_PARTITION)
        unreadable = await send_raw(producer, namespace.topic, BLOCKED_PARTITION, command(str(uuid.uuid4())),
                                    headers=[(b"x-\xff\xfe-name", b"v")])
        await producer.send_and_wait(namespace.topic, command(behind), key=b"k", partition=BLOCKED_PARTITION)
        await producer.send_and_wait(namespace.topic, command(elsewhere), key=b"k", partition=0)
    finally:
        await producer.stop()

    worker = await workers(FAULT_STAGE="unreadable").wait_ready()
    await namespace.wait_for_records(2)  # `before` and `elsewhere`

    async def not_ready():
        async with http.get(f"{worker.url}/health/ready") as response:
            return (await response.json()) if response.status == 503 else None

    body = await wait_until(not_ready, 30, "readiness DOWN")
    error = body["checks"]["consumer"]["error"]
    assert f"{namespace.topic}[{BLOCKED_PARTITION}] cannot be read at offset {unreadable}" in error
    assert "injected: this record cannot be read" in error
    for check in ("kafka", "postgres", "table_recovery", "circuit_breaker"):
        assert body["checks"][check]["status"] == "UP", body

    await asyncio.sleep(5)  # the fetcher keeps trying: the worker must neither exit nor skip the record
    assert worker.process.poll() is None, worker.log()[-3000:]
    async with http.get(f"{worker.url}/health/live") as response:
        assert response.status == 200
    async with http.get(f"{worker.url}/metrics") as response:
        assert response.status == 200
    stored = {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")}
    assert stored == {before, elsewhere}  # nothing behind the unreadable record
    committed = await committed_offsets(bootstrap_servers, namespace.app_id, namespace.topic)
    assert (committed[BLOCKED_PARTITION] or 0) <= unreadable
    assert worker.log().count("Consumer stopped:") == 1  # one line, not one per attempt
    assert "Traceback" not in worker.log()
    code, _ = worker.terminate()
    assert code == 0


async def test_a_partition_that_stops_moving_is_flagged_by_the_metric_and_the_audit(
        workers, namespace, bootstrap_servers, http):
    """PARTITION_STALL_SECONDS: the worker's metric (which PartitionStalled reads) and `python -m app audit`."""
    import subprocess
    import sys

    from tests.worker_process import REPO

    await namespace.create_topic(8)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(namespace.topic, command(str(uuid.uuid4())), key=b"k", partition=BLOCKED_PARTITION)
        await send_raw(producer, namespace.topic, BLOCKED_PARTITION, command(str(uuid.uuid4())),
                       headers=[(b"x-\xff\xfe-name", b"v")])
        await producer.send_and_wait(namespace.topic, command(str(uuid.uuid4())), key=b"k", partition=BLOCKED_PARTITION)
        await producer.send_and_wait(namespace.topic, command(str(uuid.uuid4())), key=b"k", partition=0)
    finally:
        await producer.stop()
    worker = await workers(FAULT_STAGE="unreadable", PARTITION_STALL_SECONDS="3").wait_ready()
    stalled = (f'timestamp_partition_stalled{{partition="{BLOCKED_PARTITION}",topic="{namespace.topic}"}} 1.0')
    healthy = f'timestamp_partition_stalled{{partition="0",topic="{namespace.topic}"}} 0.0'

    async def flagged():
        async with http.get(f"{worker.url}/metrics") as response:
            text = await response.text()
        return text if stalled in text else None

    text = await wait_until(flagged, 40, "the stalled partition's metric")
    assert healthy in text

    audit = subprocess.run([sys.executable, "-m", "app", "audit", "--stall-seconds", "3",
                            "--stall-confirm-seconds", "2"], cwd=REPO, env=namespace.env(),
                           capture_output=True, text=True, timeout=120)
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert f"partition {BLOCKED_PARTITION} STALLED" in audit.stdout
    assert "partition 0 STALLED" not in audit.stdout
