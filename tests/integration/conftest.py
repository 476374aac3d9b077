"""Fixtures for tests against the real Kafka broker and PostgreSQL server.

`make test` starts the local stack and exports KAFKA_BOOTSTRAP_SERVERS and
DATABASE_URL; without them these tests fail (they never skip). Each test gets
its own topic, consumer group and database, so tests do not see each other.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import psycopg2
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from yarl import URL

import deploy.local as stack
from bench.ceilings import delete_topics_containing
from app.adapters.topics import ensure_topic, topic_partitions
from tests.worker_process import REPO, FaultyWorker, Worker

pytestmark = pytest.mark.integration


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test`, which starts the local stack")
    return value


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    return _require("KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture(scope="session")
def server_url() -> str:
    return _require("DATABASE_URL")


async def wait_until(check: Callable[[], Awaitable[object]], timeout: float, what: str, interval: float = 0.2):
    """Await `check()` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Namespace:
    """Names of one test's topic, consumer group and database."""

    suffix: str
    bootstrap_servers: str
    database_url: str

    @property
    def topic(self) -> str:
        return f"test.timestamp.command.{self.suffix}"

    @property
    def app_id(self) -> str:
        return f"test-pipeline-{self.suffix}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            "APP_ID": self.app_id,
            "COMMAND_TOPIC": self.topic,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "DATABASE_URL": self.database_url,
            "TABLE_STORE": "memory://",
            "BATCH_MAX_WAIT_SECONDS": "0.1",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(overrides)
        return env

    async def create_topic(self, partitions: int = 8) -> None:
        """Create the command topic as a worker would, for tests that produce before one starts."""
        await ensure_topic(self.bootstrap_servers, self.topic, partitions, 1, {"retention.ms": "-1"})

    async def wait_for_records(self, count: int, timeout: float = 60) -> None:
        """Until timestamp_records holds `count` rows."""

        async def stored():
            return self.query("SELECT count(*) FROM timestamp_records")[0][0] == count

        await wait_until(stored, timeout, f"{count} rows in timestamp_records")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows


@pytest.fixture
def namespace(bootstrap_servers: str, server_url: str) -> Namespace:
    """A fresh database on the stack's server; it and the test's topics are dropped after the test.

    A stack kept between runs of the suite would otherwise collect ~100 topics (~1,500 partitions) a
    run, and a single broker with thousands of partitions starves the next measurement on the box."""
    suffix = uuid.uuid4().hex[:10]
    admin_url = str(URL(server_url).with_path("/postgres"))
    database = f"test_{suffix}"
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    yield Namespace(suffix, bootstrap_servers, str(URL(server_url).with_path(f"/{database}")))
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    conn.close()
    # The command topic, its dead letters and the workers' changelogs all carry the suffix. A loop of
    # its own: asyncio.run would unset the session's loop, which later tests run on.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(delete_topics_containing(bootstrap_servers, suffix))
    finally:
        loop.close()


@pytest.fixture
def workers(namespace: Namespace, tmp_path: Path):
    """Start workers with `workers(**env_overrides)`; all are stopped after the test.

    With FAULT_STAGE among the overrides the worker runs tests/faulty_worker.py.
    """
    started: list[Worker] = []

    def start(port: int | None = None, data_dir: Path | None = None, **overrides: str) -> Worker:
        """A worker; `port` reuses one (a restart of that worker: the same address and data dir);
        `data_dir` puts its WORKER_DATA_DIR there."""
        kind = FaultyWorker if "FAULT_STAGE" in overrides else Worker
        extra = {"port": port} if port is not None else {}
        if data_dir is not None:
            extra["data_dir"] = data_dir
        worker = kind(namespace.env(**overrides), tmp_path / f"worker-{len(started)}.log", **extra).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def producer(bootstrap_servers: str):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def topic_end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Partition -> end offset of a topic ({} when the topic does not exist)."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap_servers: str, group: str, topic: str) -> dict[int, int | None]:
    """Partition -> the group's committed offset (None when nothing was committed); never joins the group."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap_servers, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()


def offsets_without_rows(namespace: "Namespace", committed: dict[int, int | None]) -> dict[int, list[int]]:
    """Per partition, the offsets below the committed one that have no processed_events row."""
    rows = namespace.query('SELECT partition, "offset" FROM processed_events WHERE topic = %s', (namespace.topic,))
    present: dict[int, set[int]] = {}
    for partition, offset in rows:
        present.setdefault(partition, set()).add(offset)
    return {
        partition: missing
        for partition, offset in committed.items()
        if (missing := [o for o in range(offset or 0) if o not in present.get(partition, set())])
    }


async def assert_no_commit_past_a_missing_row(namespace, ends: dict[int, int], timeout: float = 90) -> dict:
    """Sample the group's offsets until they reach `ends`, checking each time that no message below them lacks its row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic)
        assert offsets_without_rows(namespace, committed) == {}, f"committed past unprocessed messages: {committed}"
        if all((committed.get(partition) or 0) >= end for partition, end in ends.items()):
            return committed
        await asyncio.sleep(0.3)
    pytest.fail(f"offsets stalled at {committed}")


@pytest.fixture
async def own_broker(tmp_path: Path):
    """A throwaway broker of the test's own (same jars as the stack), so stopping it disturbs no other test."""
    libs = os.environ.get("STACK_KAFKA_LIBS") or str(REPO / ".stack/kafka/libs")
    broker = await asyncio.to_thread(stack.start_kafka, tmp_path / "broker", libs_dir=Path(libs))
    yield broker
    await asyncio.to_thread(stack.stop_kafka, tmp_path / "broker", True)
