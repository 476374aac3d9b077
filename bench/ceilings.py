"""Ceilings for the benchmarks, measured in the same run over the same topic.

A pre-loaded topic of seed-format messages, a raw aiokafka consume of it, a raw
PostgreSQL batch insert of the same rows, and throw-away databases and topics.
Everything is loopback-only and bounded by the event count.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timezone

import psycopg2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from yarl import URL

from app.adapters.kafka_client import client_options
from app.adapters.database import apply_migrations

BATCH = 2000


async def produce(bootstrap: str, topic: str, events: int) -> None:
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for start in range(0, events, 5000):
            futures = []
            for _ in range(start, min(events, start + 5000)):
                command_id = str(uuid.uuid4())
                value = json.dumps({"command_id": command_id, "event_timestamp": "2024-02-29T12:00:00Z"}).encode()
                futures.append(await producer.send(topic, value, key=command_id.encode()))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topic: str, events: int) -> tuple[float, list]:
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False, max_poll_records=BATCH)
    await consumer.start()
    values = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(8)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = time.perf_counter()
        while len(values) < events:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=BATCH)).values():
                values.extend(json.loads(r.value) for r in records)
        return time.perf_counter() - started, values
    finally:
        await consumer.stop()


def raw_insert(url: str, values: list) -> float:
    apply_migrations(url)
    now = datetime.now(timezone.utc)
    conn = psycopg2.connect(url)
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        for start in range(0, len(values), BATCH):
            chunk = values[start:start + BATCH]
            cur.execute(
                "INSERT INTO timestamp_records (id, event_timestamp, processed_at, source_topic, source_partition,"
                " source_offset) SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[], %s::text[],"
                " %s::int[], %s::bigint[]) ON CONFLICT (id) DO NOTHING",
                ([v["command_id"] for v in chunk], [v["event_timestamp"] for v in chunk], [now] * len(chunk),
                 ["bench"] * len(chunk), [0] * len(chunk), list(range(start, start + len(chunk)))),
            )
            conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def fresh_database(server_url: str, name: str) -> str:
    admin = psycopg2.connect(str(URL(server_url).with_path("/postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return str(URL(server_url).with_path(f"/{name}"))


def drop_database(server_url: str, name: str) -> None:
    admin = psycopg2.connect(str(URL(server_url).with_path("/postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def delete_topics_containing(bootstrap: str, marker: str) -> None:
    """Every topic whose name contains this run's marker (its own, the workers' changelogs, dead letters)."""
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if marker in t]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()
