"""PostgreSQL outage: the circuit breaker opens, nothing is lost, processing resumes by itself.

Uses a throwaway PostgreSQL server of its own (same binaries as the stack), so
stopping it does not disturb the other tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

import deploy.local as stack

from tests.integration.conftest import wait_until


@pytest.fixture
async def own_postgres(tmp_path: Path):
    server = await asyncio.to_thread(stack.start_postgres, tmp_path / "pg")
    yield server
    await asyncio.to_thread(stack.stop_postgres, tmp_path / "pg")


def count(url: str, sql: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        value = cur.fetchone()[0]
    conn.close()
    return value


async def breaker_state(http, worker) -> float:
    async with http.get(f"{worker.url}/metrics") as response:
        body = await response.text()
    for family in text_string_to_metric_families(body):
        if family.name == "timestamp_circuit_breaker_state":
            return family.samples[0].value
    raise AssertionError("timestamp_circuit_breaker_state missing from /metrics")


async def test_postgres_restart_opens_the_breaker_and_loses_nothing(own_postgres, workers, http, namespace, tmp_path):
    worker = await workers(
        DATABASE_URL=own_postgres.url, CIRCUIT_BREAKER_FAILURES="3", CIRCUIT_BREAKER_RESET_SECONDS="3",
        DATABASE_RETRY_MAX_SECONDS="0.5", DATABASE_TIMEOUT_SECONDS="2",
    ).wait_ready()

    async def post() -> str:
        async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
            assert response.status == 200  # Kafka is up: commands are still accepted
            return (await response.json())["id"]

    ids = [await post()]

    async def stored(n: int):
        async def check():
            return count(own_postgres.url, "SELECT count(*) FROM timestamp_records") == n
        return check

    await wait_until(await stored(1), 30, "the first command to be stored")
    await asyncio.to_thread(stack.stop_postgres, tmp_path / "pg")
    ids += [await post() for _ in range(20)]

    async def breaker_open():
        async with http.get(f"{worker.url}/health/ready") as response:
            body = await response.json()
        return response.status == 503 and body["checks"]["circuit_breaker"]["status"] == "DOWN"

    await wait_until(breaker_open, 60, "readiness to report the open circuit breaker")
    assert await breaker_state(http, worker) == 2

    await asyncio.to_thread(stack.start_postgres, tmp_path / "pg")
    await wait_until(await stored(21), 90, "all 21 commands to be stored after the restart", interval=1)

    async def closed():
        return await breaker_state(http, worker) == 0

    await wait_until(closed, 30, "the breaker to close again")
    assert count(own_postgres.url, "SELECT count(DISTINCT id) FROM timestamp_records") == 21
    assert count(own_postgres.url, "SELECT count(*) FROM processed_events") == 21
    async with http.get(f"{worker.url}/health/ready") as response:
        assert response.status == 200
