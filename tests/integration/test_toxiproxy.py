"""The chaos run's plumbing: Toxiproxy in front of PostgreSQL and of a broker's extra listener.

Real server (built by chaos/install-toxiproxy.sh), real broker, real PostgreSQL.
A Kafka client bootstrapped through the proxy must stay behind it (the broker
advertises the proxy's port on that listener), so cutting the proxy cuts the
client off; toxics must reach PostgreSQL clients as latency, a black hole and
a reset connection.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

import deploy.local as stack
from app.adapters.kafka_client import client_options
from app.adapters.topics import ensure_topic
from chaos.toxiproxy import Toxiproxy, ToxiproxyServer
from deploy.local.processes import free_ports

REPO = Path(__file__).resolve().parents[2]


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
def toxiproxy(tmp_path: Path):
    server = ToxiproxyServer(tmp_path / "toxiproxy", free_ports(1)[0]).start()
    yield server
    server.stop()


async def test_kafka_client_stays_behind_the_proxy(tmp_path: Path, toxiproxy: ToxiproxyServer):
    listen, shown = free_ports(2)
    libs = os.environ.get("STACK_KAFKA_LIBS") or str(REPO / ".stack/kafka/libs")
    broker = await asyncio.to_thread(stack.start_kafka, tmp_path / "broker", libs_dir=Path(libs),
                                     extra_listeners={"PROXY0": (listen, shown)})
    producer = None
    try:
        async with Toxiproxy(toxiproxy.api) as toxi:
            await toxi.proxy("kafka0", shown, listen)
            await ensure_topic(broker.bootstrap, "toxi.test", 1, 1, {})
            proxied = f"127.0.0.1:{shown}"
            producer = AIOKafkaProducer(**client_options(proxied), acks="all", request_timeout_ms=3000)
            await producer.start()
            await producer.send_and_wait("toxi.test", b"through the proxy")
            assert {b.port for b in producer.client.cluster.brokers()} == {shown}

            await toxi.add_toxic("kafka0", "latency", latency=400)
            started = time.monotonic()
            await producer.send_and_wait("toxi.test", b"slow")
            assert time.monotonic() - started >= 0.4
            await toxi.remove_toxic("kafka0", "latency-downstream")

            await toxi.enable("kafka0", False)  # partitioned: the direct listener still works, the proxy does not
            with pytest.raises((KafkaError, asyncio.TimeoutError)):
                await asyncio.wait_for(producer.send_and_wait("toxi.test", b"cut off"), 8)
            await toxi.enable("kafka0", True)
            await asyncio.wait_for(producer.send_and_wait("toxi.test", b"back"), 30)
    finally:
        if producer is not None:
            await producer.stop()
        await asyncio.to_thread(stack.stop_kafka, tmp_path / "broker", True)


def select_one(url: str, timeout: int = 3) -> float:
    started = time.monotonic()
    with psycopg2.connect(url, connect_timeout=timeout) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    return time.monotonic() - started


async def test_postgres_toxics_reach_the_client(toxiproxy: ToxiproxyServer):
    url = os.environ["DATABASE_URL"]
    port = urlsplit(url).port
    proxied = free_ports(1)[0]
    proxied_url = with_port(url, proxied)
    async with Toxiproxy(toxiproxy.api) as toxi:
        await toxi.proxy("pg0", proxied, port)
        assert await asyncio.to_thread(select_one, proxied_url) < 2

        await toxi.add_toxic("pg0", "latency", latency=300)
        assert await asyncio.to_thread(select_one, proxied_url) >= 0.3
        await toxi.reset()

        await toxi.add_toxic("pg0", "timeout", timeout=0)  # black hole: nothing comes back, nothing closes
        started = time.monotonic()
        with pytest.raises(psycopg2.OperationalError):
            await asyncio.to_thread(select_one, proxied_url, 2)
        assert time.monotonic() - started >= 1.9
        await toxi.reset()

        conn = await asyncio.to_thread(psycopg2.connect, proxied_url)
        try:
            await toxi.add_toxic("pg0", "reset_peer", timeout=0)
            with pytest.raises(psycopg2.OperationalError):
                with conn.cursor() as cur:
                    await asyncio.to_thread(cur.execute, "SELECT pg_sleep(0.5)")
        finally:
            conn.close()
        await toxi.reset()
        assert await asyncio.to_thread(select_one, proxied_url) < 2
        assert await toxi.toxics("pg0") == []
