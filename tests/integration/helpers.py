"""Helpers shared by the integration tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import psycopg2
from aiokafka import AIOKafkaConsumer, TopicPartition
from yarl import URL

from app.adapters.topics import topic_partitions
from tests.worker_process import REPO


async def served_from(http, worker, ids) -> dict[str, int]:
    """GET every id from `worker`: how many answers came from each X-Served-From (each must be a 200)."""
    sources: dict[str, int] = {}
    for command_id in ids:
        async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
            assert response.status == 200, command_id
            source = response.headers["X-Served-From"]
            sources[source] = sources.get(source, 0) + 1
    return sources


async def produce_commands(producer, topic: str, count: int, partition: int = 0) -> list[str]:
    """`count` valid commands with fresh ids on one partition; returns the ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    await asyncio.gather(*[
        await producer.send(topic, json.dumps({"command_id": i, "event_timestamp": "2021-06-01T12:00:00Z"}).encode(),
                            partition=partition)
        for i in ids
    ])
    return ids


async def read_all(bootstrap_servers: str, topic: str) -> list:
    """Every record of the topic, from the start of each partition to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def run_cli(namespace, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m app ARGS` with the test's environment; fails the test when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, env=namespace.env(**env),
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The counts a replay prints."""
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return {key.strip(): int(lines[key].split()[0]) for key in
            ("events read", "rows inserted", "rows already present", "invalid")}


def other_database(namespace, name: str) -> str:
    """An empty database next to the test's own, dropped with the server's test databases."""
    admin = str(URL(namespace.database_url).with_path("/postgres"))
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return str(URL(namespace.database_url).with_path(f"/{name}"))
