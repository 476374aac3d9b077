"""Replay throughput against ceilings measured in the same run.

    make bench                  # 50,000 events
    make bench EVENTS=200000

Against the local stack (.stack/env): produces EVENTS seed-format messages to a
fresh topic, then measures
  1. raw Kafka consume: aiokafka reading the topic, no processing (ceiling 1);
  2. raw PostgreSQL insert: the same rows inserted with one multi-row
     unnest() statement per 2,000, nothing else (ceiling 2);
  3. `python -m app replay`'s code path into an empty database;
and reports events/s and the replay's ratio to each ceiling. Bounded: one
topic, EVENTS messages, loopback only; the topic and databases are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import datetime, timezone

import psycopg2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from yarl import URL

from app.database import Database, apply_migrations
from app.replay import replay
from app.topics import ensure_topic

BATCH = 2000


async def produce(bootstrap: str, topic: str, events: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024)
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
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=BATCH)
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


def database(server_url: str, name: str) -> str:
    admin = psycopg2.connect(str(URL(server_url).with_path("/postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return str(URL(server_url).with_path(f"/{name}"))


def drop(server_url: str, name: str) -> None:
    admin = psycopg2.connect(str(URL(server_url).with_path("/postgres")))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


async def main(events: int) -> None:
    bootstrap, server = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"]
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.replay.{suffix}"
    await ensure_topic(bootstrap, topic, 8, 1, {})
    raw_db, replay_db = f"bench_raw_{suffix}", f"bench_replay_{suffix}"
    try:
        await produce(bootstrap, topic, events)
        consume_seconds, values = await raw_consume(bootstrap, topic, events)
        insert_seconds = raw_insert(database(server, raw_db), values)
        target = Database(database(server, replay_db))
        summary = await replay(bootstrap, topic, target, batch_size=BATCH, progress=False)
        await target.close()
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.delete_topics([topic])
        await admin.close()
        drop(server, raw_db)
        drop(server, replay_db)
    assert summary.rows_inserted == events, summary
    consume_rate, insert_rate = events / consume_seconds, events / insert_seconds
    print(f"events:                 {events}")
    print(f"raw Kafka consume:      {consume_rate:10.0f} events/s")
    print(f"raw PostgreSQL insert:  {insert_rate:10.0f} events/s")
    print(f"replay (end to end):    {summary.rate:10.0f} events/s "
          f"({summary.rate / consume_rate:.2f} of raw consume, {summary.rate / insert_rate:.2f} of raw insert)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().events))
