"""Idempotency-Key: one id and one row per key, across workers and restarts."""

from __future__ import annotations

import uuid

from tests.integration.conftest import wait_until


async def test_same_key_gives_the_same_id_and_one_row_across_workers_and_restarts(workers, http, namespace):
    first, second = workers(), workers()
    await first.wait_ready()
    await second.wait_ready()
    key = f"client-retry-{uuid.uuid4()}"

    async def post(worker) -> str:
        async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z",
                             headers={"Idempotency-Key": key}) as response:
            assert response.status == 200
            return (await response.json())["id"]

    def events_for(command_id: str, count: int):
        async def check():
            rows = namespace.query(
                "SELECT status FROM processed_events WHERE event_id = %s ORDER BY status", (command_id,))
            return rows if len(rows) == count else None

        return check

    command_id = await post(first)
    assert await post(second) == command_id
    assert await wait_until(events_for(command_id, 2), 30, "both messages to be processed") == [
        ("duplicate",), ("persisted",)]

    first.stop()
    third = await workers().wait_ready()
    assert await post(third) == command_id
    await wait_until(events_for(command_id, 3), 30, "the third message to be processed")
    assert namespace.query("SELECT count(*) FROM timestamp_records") == [(1,)]


async def test_bad_idempotency_key_is_a_400_and_publishes_nothing(workers, http, namespace):
    worker = await workers().wait_ready()
    async with http.post(f"{worker.url}/api/v1/timestamp", headers={"Idempotency-Key": "has spaces"}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_idempotency_key"
