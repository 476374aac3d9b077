"""TABLE_RETENTION: expired ids leave the query table and its changelog; PostgreSQL answers for them.

A window of a few seconds, a changelog whose segments roll every second, and
tombstones kept one second after compaction, so the broker's cleaner (which
the local stack wakes every 2 s) compacts within the test.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aiokafka import AIOKafkaProducer

from app.adapters.topics import topic_partitions
from tests.integration.conftest import wait_until
from tests.integration.helpers import read_all

RETENTION = {
    "TABLE_RETENTION": "6s", "TABLE_EXPIRY_INTERVAL_SECONDS": "0.5",
    "TABLE_CHANGELOG_SEGMENT_MS": "1000", "TABLE_CHANGELOG_DELETE_RETENTION_MS": "1000",
}


async def get(http, worker, command_id: str) -> tuple[int, dict, str | None]:
    async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
        return response.status, await response.json(), response.headers.get("X-Served-From")


async def post(http, worker, second: int) -> str:
    async with http.post(f"{worker.url}/api/v1/timestamp/2020-01-01T00:00:{second:02d}Z") as response:
        assert response.status == 200, await response.text()
        return (await response.json())["id"]


async def test_expired_ids_leave_the_table_and_its_changelog_and_are_answered_from_postgresql(
        workers, http, namespace, bootstrap_servers):
    worker = await workers(**RETENTION).wait_ready()
    old = [await post(http, worker, i) for i in range(6)]
    await namespace.wait_for_records(len(old))
    fresh_answers = {}
    for command_id in old:
        status, body, source = await get(http, worker, command_id)
        assert (status, source) == (200, "table")
        fresh_answers[command_id] = body

    async def all_expired():
        answers = [await get(http, worker, command_id) for command_id in old]
        return answers if all(source == "database" for _, _, source in answers) else None

    answers = await wait_until(all_expired, 30, "the old ids answered from PostgreSQL")
    for command_id, (status, body, _) in zip(old, answers):
        assert status == 200 and body == fresh_answers[command_id]  # the same answer as from the table

    changelog = f"{namespace.app_id}-timestamps-changelog"
    records = await read_all(bootstrap_servers, changelog)
    last_value = {r.key.decode(): r.value for r in records}
    assert {command_id: last_value[command_id] for command_id in old} == {command_id: None for command_id in old}

    # A late duplicate of an expired id: the first timestamp still wins, and the table is not refilled.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        duplicate = {"command_id": old[0], "event_timestamp": "2030-06-01T00:00:00Z"}
        await producer.send_and_wait(namespace.topic, json.dumps(duplicate).encode(), key=old[0].encode())
    finally:
        await producer.stop()

    async def duplicate_processed():
        return namespace.query("SELECT count(*) FROM processed_events WHERE status = 'duplicate'")[0][0] == 1

    await wait_until(duplicate_processed, 30, "the duplicate recorded")
    assert (await get(http, worker, old[0])) == (200, fresh_answers[old[0]], "database")

    # Compaction drops the expired values; recovery then reads the window (and recent tombstones) only.
    # The broker compacts only closed segments, and a partition's segment closes at its next write: each
    # look writes to every partition (a tombstone of a key the table never had), so none waits for a
    # command that happens to hash to it.
    async def old_values_compacted():
        await asyncio.gather(*[await roller.send(changelog, key=f"roll-{uuid.uuid4()}".encode(), value=None,
                                                 partition=partition) for partition in partitions])
        keys_with_values = {r.key.decode() for r in await read_all(bootstrap_servers, changelog) if r.value}
        return keys_with_values.isdisjoint(old) or None

    partitions = await topic_partitions(bootstrap_servers, changelog)
    roller = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await roller.start()
    try:
        await wait_until(old_values_compacted, 120, "the expired ids' values compacted out of the changelog",
                         interval=3)
    finally:
        await roller.stop()
    recent = [await post(http, worker, 30 + i) for i in range(3)]  # inside the window when the worker stops

    async def recent_stored():
        return namespace.query("SELECT count(*) FROM timestamp_records WHERE id = ANY(%s::uuid[])", (recent,))[0][0] == 3

    await wait_until(recent_stored, 30, "the recent commands stored")
    worker.terminate()

    fresh = await workers(**{**RETENTION, "TABLE_RETENTION": "1h"}).wait_ready()  # memory store: full recovery
    for command_id in recent:
        status, _, source = await get(http, fresh, command_id)
        assert (status, source) == (200, "table")
    for command_id in old:
        assert await get(http, fresh, command_id) == (200, fresh_answers[command_id], "database")


async def test_forever_keeps_every_id_in_the_table(workers, http, namespace):
    worker = await workers(TABLE_EXPIRY_INTERVAL_SECONDS="0.5").wait_ready()  # TABLE_RETENTION defaults to forever
    command_id = await post(http, worker, 1)
    await namespace.wait_for_records(1)
    await asyncio.sleep(2)
    status, _, source = await get(http, worker, command_id)
    assert (status, source) == (200, "table")
    assert namespace.query("SELECT count(*) FROM table_expiry_cursors")[0][0] == 0


async def test_an_unknown_id_is_answered_404_from_nowhere(workers, http, namespace):
    worker = await workers(**RETENTION).wait_ready()
    async with http.get(f"{worker.url}/api/v1/timestamp/{uuid.uuid4()}") as response:
        assert response.status == 404 and "X-Served-From" not in response.headers
    async with http.get(f"{worker.url}/metrics") as response:
        assert 'timestamp_record_lookups_total{source="none"} 1.0' in await response.text()
