"""Disaster-recovery drills: rebuild PostgreSQL and the query table from Kafka."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.conftest import committed_offsets, wait_until
from tests.integration.helpers import other_database, run_cli, summary

RECORD_SQL = "SELECT id::text, event_timestamp FROM timestamp_records ORDER BY id"


async def produce(producer, topic: str, count: int, timestamp_ms: int | None = None) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    sent = [
        await producer.send(
            topic,
            json.dumps({"command_id": i, "event_timestamp": f"2024-02-29T12:{n % 60:02d}:00Z"}).encode(),
            key=i.encode(), timestamp_ms=timestamp_ms,
        )
        for n, i in enumerate(ids)
    ]
    await asyncio.gather(*sent)
    return ids


async def test_truncate_then_replay_restores_every_row_and_a_second_run_changes_nothing(workers, namespace, producer):
    await namespace.create_topic()
    ids = await produce(producer, namespace.topic, 500)
    await producer.send_and_wait(namespace.topic, b"garbage")
    worker = await workers().wait_ready()

    await namespace.wait_for_records(500)
    worker.stop()
    before = namespace.query(RECORD_SQL)
    namespace.query("TRUNCATE timestamp_records, processed_events")

    first = summary(run_cli(namespace, "replay", "--no-progress"))
    assert first == {"events read": 501, "rows inserted": 500, "rows already present": 0, "invalid": 1}
    assert namespace.query(RECORD_SQL) == before
    assert {row[0] for row in before} == set(ids)
    assert namespace.query("SELECT count(*) FROM processed_events") == [(501,)]

    second = summary(run_cli(namespace, "replay", "--no-progress"))
    assert second == {"events read": 501, "rows inserted": 0, "rows already present": 500, "invalid": 1}
    assert namespace.query(RECORD_SQL) == before


async def test_workers_create_the_command_topic_with_unlimited_retention(workers, namespace, bootstrap_servers):
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    await workers().wait_ready()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, namespace.topic)])
    finally:
        await admin.close()
    [(_, _, _, _, entries)] = response.resources
    configs = {entry[0]: entry[1] for entry in entries}
    assert configs["retention.ms"] == "-1"


async def test_replay_into_an_empty_database_while_workers_run(workers, http, namespace, producer, bootstrap_servers):
    worker = await workers().wait_ready()
    ids = await produce(producer, namespace.topic, 300)

    await namespace.wait_for_records(300)

    async def all_committed():  # the live worker commits after its rows: wait for its last commit
        committed = await committed_offsets(bootstrap_servers, namespace.app_id, namespace.topic)
        return sum(offset or 0 for offset in committed.values()) == 300

    await wait_until(all_committed, 60, "the worker to commit all 300 offsets")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    group_before = await admin.list_consumer_group_offsets(namespace.app_id)

    target = other_database(namespace, f"{namespace.database_url.rsplit('/', 1)[1]}_copy")
    result = run_cli(namespace, "replay", "--no-progress", "--database-url", target)
    assert summary(result)["rows inserted"] == 300

    import psycopg2

    with psycopg2.connect(target) as conn, conn.cursor() as cur:
        cur.execute(RECORD_SQL)
        copied = cur.fetchall()
    conn.close()
    assert copied == namespace.query(RECORD_SQL)
    assert {row[0] for row in copied} == set(ids)
    # The replay used no consumer group: the live group's offsets did not move.
    assert await admin.list_consumer_group_offsets(namespace.app_id) == group_before
    await admin.close()

    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
        live_id = (await response.json())["id"]

    async def live_stored():
        return namespace.query("SELECT 1 FROM timestamp_records WHERE id = %s", (live_id,))

    await wait_until(live_stored, 30, "the live worker to keep persisting")


async def test_replay_from_a_timestamp_takes_only_later_events(namespace, producer):
    await namespace.create_topic()
    now = int(time.time() * 1000)
    older = await produce(producer, namespace.topic, 50, timestamp_ms=now - 3_600_000)
    newer = await produce(producer, namespace.topic, 40, timestamp_ms=now)
    cut = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 60))

    result = run_cli(namespace, "replay", "--no-progress", "--from", cut)
    assert summary(result)["events read"] == 40
    assert {row[0] for row in namespace.query(RECORD_SQL)} == set(newer)
    assert not set(older) & {row[0] for row in namespace.query(RECORD_SQL)}


async def test_lost_changelog_is_rebuilt_from_postgres(workers, http, namespace, producer, bootstrap_servers):
    first = await workers().wait_ready()
    ids = await produce(producer, namespace.topic, 30)

    await namespace.wait_for_records(30)
    first.stop()
    changelog = f"{namespace.app_id}-timestamps-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    await admin.delete_topics([changelog])
    await admin.close()
    await asyncio.sleep(2)  # topic deletion completes asynchronously on the broker

    second = await workers().wait_ready()  # recreates an empty changelog
    second.stop()
    result = run_cli(namespace, "rebuild-table", "--no-progress")
    assert "records written" in result.stdout and ": 30;" in result.stdout
    namespace.query("DELETE FROM timestamp_records RETURNING id")  # only the table can answer now

    third = await workers().wait_ready()
    for command_id in ids:
        async with http.get(f"{third.url}/api/v1/timestamp/{command_id}") as response:
            assert response.status == 200, f"{command_id} missing from the rebuilt table"
            assert (await response.json())["event_timestamp"].startswith("2024-02-29T12:")
