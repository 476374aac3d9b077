"""The query table's changelog, as the agent writes it a batch at a time."""

from __future__ import annotations

import asyncio
import json

from aiokafka.partitioner import DefaultPartitioner

from app.adapters.topics import topic_partitions
from tests.integration.conftest import wait_until
from tests.integration.helpers import read_all


async def test_each_record_is_one_changelog_message_in_its_keys_partition_holding_the_get_body(
        workers, http, namespace, bootstrap_servers):
    worker = await workers().wait_ready()

    async def post(i: int) -> str:
        async with http.post(f"{worker.url}/api/v1/timestamp/2020-01-01T00:00:{i:02d}Z") as response:
            assert response.status == 200, await response.text()
            return (await response.json())["id"]

    ids = await asyncio.gather(*(post(i) for i in range(60)))
    await namespace.wait_for_records(60)
    changelog = f"{namespace.app_id}-timestamps-changelog"

    async def all_in_changelog():
        records = await read_all(bootstrap_servers, changelog)
        return records if len({r.key for r in records}) >= 60 else None

    records = await wait_until(all_in_changelog, 30, "every record in the table's changelog")
    assert sorted(r.key.decode() for r in records) == sorted(ids)  # one message per record
    partitions = sorted(await topic_partitions(bootstrap_servers, changelog))
    for record in records:
        # The partition GET routing computes for the key (Kafka's default partitioner).
        assert record.partition == DefaultPartitioner()(record.key, partitions, partitions)
        async with http.get(f"{worker.url}/api/v1/timestamp/{record.key.decode()}") as response:
            assert response.status == 200
            assert json.loads(record.value) == await response.json()
    rows = dict(namespace.query("SELECT id::text, source_partition FROM timestamp_records"))
    assert {r.key.decode(): r.partition for r in records} == rows  # co-partitioned with the command topic
