"""Several workers in one consumer group; a worker killed mid-stream."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import uuid

import pytest

from tests.integration.conftest import wait_until


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_two_workers_post_to_one_get_every_id_from_the_other(workers, http, namespace, store):
    first = workers(TABLE_STORE=store)
    second = workers(TABLE_STORE=store)
    await first.wait_ready()
    await second.wait_ready()

    async def post(i: int) -> tuple[str, str]:
        timestamp = f"2020-01-01T00:{i // 60:02d}:{i % 60:02d}Z"
        async with http.post(f"{first.url}/api/v1/timestamp/{timestamp}") as response:
            assert response.status == 200, await response.text()
            return (await response.json())["id"], timestamp

    posted = dict(await asyncio.gather(*(post(i) for i in range(200))))

    statuses: dict[str, int] = {}

    async def all_served():
        async def get(command_id):
            async with http.get(f"{second.url}/api/v1/timestamp/{command_id}") as response:
                statuses[command_id] = response.status
                return command_id, (await response.json() if response.status == 200 else None)

        found = dict(await asyncio.gather(*(get(i) for i in posted)))
        return found if all(found.values()) else None

    try:
        found = await wait_until(all_served, 60, "every id to be served by the second worker", interval=1)
    except pytest.fail.Exception:
        stored = namespace.query("SELECT count(*) FROM timestamp_records")[0][0]
        pytest.fail(f"GET statuses {collections.Counter(statuses.values())}, {stored} of 200 rows stored;"
                    f" logs: {first.log_path.parent}")
    assert {i: r["event_timestamp"] for i, r in found.items()} == posted
    assert namespace.query("SELECT count(*), count(DISTINCT id) FROM timestamp_records") == [(200, 200)]

    # With the rows gone from PostgreSQL only the tables can answer: each GET is
    # routed to the worker that owns the id's partition and served from its table.
    namespace.query("DELETE FROM timestamp_records RETURNING id")
    served_from_tables = await all_served()
    assert served_from_tables is not None, "some ids were not in the table of their owner"
    assert {i: r["event_timestamp"] for i, r in served_from_tables.items()} == posted


async def test_worker_killed_mid_stream_loses_and_doubles_nothing(workers, namespace, producer):
    total = 10_000
    ids = [str(uuid.uuid4()) for _ in range(total)]
    await namespace.create_topic()
    for start in range(0, total, 1000):
        await asyncio.gather(*[
            await producer.send(
                namespace.topic,
                json.dumps({"command_id": i, "event_timestamp": "2021-06-01T12:00:00Z"}).encode(),
                key=i.encode(),
            )
            for i in ids[start:start + 1000]
        ])

    def stored() -> int:
        return namespace.query("SELECT count(*) FROM timestamp_records")[0][0]

    victim = workers(BATCH_SIZE="100")
    await victim.wait_ready()

    async def some_stored():
        return stored() >= 1000

    await wait_until(some_stored, 60, "the first batches to be stored", interval=0.05)
    victim.signal(signal.SIGKILL)
    victim.process.wait(10)
    at_kill = stored()
    assert at_kill < total, "the worker finished before it was killed; the test proves nothing"

    survivor = workers(BATCH_SIZE="100")
    await survivor.wait_ready()

    async def all_stored():
        return stored() == total

    await wait_until(all_stored, 120, f"all {total} commands to be stored", interval=0.5)
    assert namespace.query("SELECT count(*), count(DISTINCT id) FROM timestamp_records") == [(total, total)]
    stored_ids = {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")}
    assert stored_ids == set(ids)
    # One processed_events row per message: replayed messages added none.
    assert namespace.query(
        "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE status = 'persisted') FROM processed_events"
    ) == [(total, total, total)]


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_restarted_worker_serves_from_the_table_recovered_from_its_changelog(workers, http, namespace, store):
    """With the PostgreSQL rows gone, only the changelog-backed table can answer."""
    first = await workers(TABLE_STORE=store).wait_ready()
    ids = []
    for i in range(20):
        async with http.post(f"{first.url}/api/v1/timestamp/2022-02-0{1 + i % 9}T10:00:00Z") as response:
            ids.append((await response.json())["id"])

    await namespace.wait_for_records(len(ids))
    first.stop()
    namespace.query("DELETE FROM timestamp_records RETURNING id")

    second = await workers(TABLE_STORE=store).wait_ready()
    for command_id in ids:
        async with http.get(f"{second.url}/api/v1/timestamp/{command_id}") as response:
            assert response.status == 200, f"{command_id} not served from the table"
            assert (await response.json())["id"] == command_id
