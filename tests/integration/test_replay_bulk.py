"""The bulk-loading replay against the real stack: the live worker's rows, idempotent, resumable after a kill."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid

import psycopg2
import psycopg2.errors

from tests.integration.conftest import topic_end_offsets, wait_until
from tests.integration.helpers import other_database, run_cli, summary
from tests.worker_process import REPO

# Every column but the processing times (processed_at: when a batch was
# processed; created_at: when its transaction began), which differ by nature
# between two writers of the same commands.
RECORDS = ("SELECT id, event_timestamp, received_at, correlation_id, source_topic, source_partition, source_offset"
           " FROM timestamp_records ORDER BY id")
EVENTS = ('SELECT topic, partition, "offset", event_id, correlation_id, status, error'
          ' FROM processed_events ORDER BY topic, partition, "offset"')
EVERY_RECORD_COLUMN = "SELECT * FROM timestamp_records ORDER BY id"
EVERY_EVENT_COLUMN = 'SELECT * FROM processed_events ORDER BY topic, partition, "offset"'
INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname"


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.close()
    return rows


def full_summary(result: subprocess.CompletedProcess) -> dict[str, int]:
    counts = summary(result)
    line = next(line for line in result.stdout.splitlines() if line.startswith("events already recorded:"))
    counts["events already recorded"] = int(line.split(":", 1)[1].split()[0])
    return counts


def command(command_id: str, minute: int, received_at: bool = False) -> bytes:
    body = {"command_id": command_id, "event_timestamp": f"2024-02-29T12:{minute % 60:02d}:00.{minute:06d}+01:00"}
    if received_at:
        body["received_at"] = f"2026-11-23T10:00:{minute % 60:02d}.5Z"
    return json.dumps(body).encode()


async def test_replay_writes_the_rows_the_live_worker_writes(workers, http, namespace, producer):
    """Every kind of message the live path meets, processed by a worker, then replayed into an empty database."""
    await namespace.create_topic()
    worker = await workers().wait_ready()
    # Through the API: plain, with a correlation id, and one idempotency key used twice (a duplicate).
    key = f"retry-{uuid.uuid4()}"
    for n, headers in enumerate([{}, {"X-Correlation-ID": f"ING:{uuid.uuid4()}"}, {"Idempotency-Key": key},
                                 {"Idempotency-Key": key, "X-Correlation-ID": f"ING:{uuid.uuid4()}"}]):
        async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:1{n}.25-07:00",
                             headers=headers) as response:
            assert response.status == 200, await response.text()
    # Straight to the topic: other producers' seed format, received_at, correlation headers
    # (valid and malformed), the same id twice in one partition, and invalid values.
    sent = []
    for n in range(300):
        command_id = str(uuid.uuid4())
        headers = [("correlation_id", f"SRC:{uuid.uuid4()}".encode())] if n % 3 == 0 else []
        if n % 50 == 7:
            headers = [("correlation_id", b"not a correlation id")]
        sent.append(await producer.send(namespace.topic, command(command_id, n, received_at=n % 2 == 0),
                                        key=command_id.encode(), headers=headers))
        if n % 40 == 0:  # the same command again, same key: same partition, a later offset
            sent.append(await producer.send(namespace.topic, command(command_id, n + 1), key=command_id.encode()))
    for n, value in enumerate([b"garbage", b"[]", b'{"command_id": "nope"}', None,
                               json.dumps({"command_id": str(uuid.uuid4()), "event_timestamp": "2024-02-30T00:00:00Z"}).encode(),
                               json.dumps({"command_id": str(uuid.uuid4()), "event_timestamp": "2016-12-31T23:59:60Z"}).encode(),
                               b"[" * 100 + b"]" * 100]):
        sent.append(await producer.send(namespace.topic, value, key=f"bad-{n}".encode(),
                                        headers=[("correlation_id", f"BAD:{uuid.uuid4()}".encode())]))
    await asyncio.gather(*sent)
    total = sum((await topic_end_offsets(namespace.bootstrap_servers, namespace.topic)).values())

    async def all_processed():
        return namespace.query("SELECT count(*) FROM processed_events")[0][0] == total

    await wait_until(all_processed, 90, f"the worker to process all {total} messages")
    worker.stop()
    live_records, live_events = namespace.query(RECORDS), namespace.query(EVENTS)
    statuses = {status for *_, status, _ in live_events}
    assert statuses == {"persisted", "duplicate", "invalid"}, statuses

    target = other_database(namespace, f"{namespace.database_url.rsplit('/', 1)[1]}_bulk")
    result = run_cli(namespace, "replay", "--no-progress", "--database-url", target)

    assert query(target, RECORDS) == live_records
    assert query(target, EVENTS) == live_events
    invalid = sum(1 for *_, status, _ in live_events if status == "invalid")
    assert full_summary(result) == {"events read": total, "rows inserted": len(live_records),
                                    "rows already present": total - len(live_records) - invalid,
                                    "invalid": invalid, "events already recorded": 0}
    # The indexes built after the load are the migrations' own, and nothing of the replay is left.
    assert "indexes built after:  4" in result.stdout
    assert query(target, INDEXES) == namespace.query(INDEXES)


async def test_a_second_replay_changes_nothing_and_reports_everything_as_present(namespace, producer):
    await namespace.create_topic()
    ids = [str(uuid.uuid4()) for _ in range(2000)]
    sent = [await producer.send(namespace.topic, command(i, n, received_at=True), key=i.encode())
            for n, i in enumerate(ids)]
    sent.append(await producer.send(namespace.topic, b"not json"))
    await asyncio.gather(*sent)

    first = run_cli(namespace, "replay", "--batch-size", "300", "--connections", "3")
    assert full_summary(first) == {"events read": 2001, "rows inserted": 2000, "rows already present": 0,
                                   "invalid": 1, "events already recorded": 0}
    # One progress bar per partition group, with its rate and ETA, on stderr.
    for group in ("replay p0,3,6", "replay p1,4,7", "replay p2,5"):
        assert group in first.stderr, first.stderr[-2000:]
    assert "event/s" in first.stderr
    records, events = namespace.query(EVERY_RECORD_COLUMN), namespace.query(EVERY_EVENT_COLUMN)
    indexes = namespace.query(INDEXES)

    second = run_cli(namespace, "replay", "--no-progress")
    assert full_summary(second) == {"events read": 2001, "rows inserted": 0, "rows already present": 2000,
                                    "invalid": 1, "events already recorded": 2001}
    assert "indexes built after" not in second.stdout  # not empty: the indexes were kept and maintained
    assert namespace.query(EVERY_RECORD_COLUMN) == records  # processing times included: nothing rewritten
    assert namespace.query(EVERY_EVENT_COLUMN) == events
    assert namespace.query(INDEXES) == indexes
    assert {str(row[0]) for row in records} == set(ids)


async def test_a_killed_replay_is_completed_by_running_it_again(namespace, producer, bootstrap_servers):
    await namespace.create_topic()
    fast = await _fast_producer(bootstrap_servers)
    try:
        ids = [str(uuid.uuid4()) for _ in range(60_000)]
        for start in range(0, len(ids), 5000):
            await asyncio.gather(*[await fast.send(namespace.topic, command(i, n), key=i.encode())
                                   for n, i in enumerate(ids[start:start + 5000], start)])
        await fast.send_and_wait(namespace.topic, b"poison", key=b"bad")
    finally:
        await fast.stop()
    total = len(ids) + 1

    process = subprocess.Popen([sys.executable, "-m", "app", "replay", "--no-progress", "--batch-size", "500"],
                               cwd=REPO, env=namespace.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        written = _wait_for_rows(namespace.database_url, process, at_least=1000, timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()
        process.stderr.close()
    present = namespace.query("SELECT count(*) FROM processed_events")[0][0]
    records_present = namespace.query("SELECT count(*) FROM timestamp_records")[0][0]
    assert written <= present < total, "the replay should have been killed half-way"
    # Killed mid-load into an empty database: its secondary indexes are still deferred, and listed.
    assert namespace.query("SELECT count(*) FROM replay_deferred_indexes") == [(4,)]

    again = run_cli(namespace, "replay", "--no-progress")
    assert full_summary(again) == {"events read": total, "rows inserted": len(ids) - records_present,
                                   "rows already present": records_present, "invalid": 1,
                                   "events already recorded": present}
    assert "indexes built after:  4" in again.stdout  # the ones the killed run deferred
    assert namespace.query("SELECT to_regclass('replay_deferred_indexes')") == [(None,)]
    # Exactly once: each command one record, each message one row, none reported as a duplicate.
    assert namespace.query("SELECT count(*), count(DISTINCT id) FROM timestamp_records") == [(len(ids), len(ids))]
    assert namespace.query("SELECT status, count(*) FROM processed_events GROUP BY status ORDER BY 1") == [
        ("invalid", 1), ("persisted", len(ids))]
    # And the same rows as one uninterrupted replay writes.
    clean = other_database(namespace, f"{namespace.database_url.rsplit('/', 1)[1]}_clean")
    run_cli(namespace, "replay", "--no-progress", "--database-url", clean)
    assert query(clean, RECORDS) == namespace.query(RECORDS)
    assert query(clean, EVENTS) == namespace.query(EVENTS)
    assert query(clean, INDEXES) == namespace.query(INDEXES)


async def _fast_producer(bootstrap_servers: str):
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    return producer


def _wait_for_rows(url: str, process: subprocess.Popen, at_least: int, timeout: float) -> int:
    """Poll processed_events until it has `at_least` rows; the count seen."""
    deadline = time.monotonic() + timeout
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"the replay ended before it was killed: {process.stderr.read()[-2000:]!r}"
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM processed_events")
                    count = cur.fetchone()[0]
            except psycopg2.errors.UndefinedTable:
                count = 0  # not migrated yet
            if count >= at_least:
                return count
            time.sleep(0.01)
    finally:
        conn.close()
    raise AssertionError(f"fewer than {at_least} rows after {timeout} s")
