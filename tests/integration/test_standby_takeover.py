"""Standby replicas: the survivor of a SIGKILL serves the dead worker's keys without replaying their changelog.

Faust keeps a standby copy of each table partition on another worker
(`table_standby_replicas`, 1) when the store is RocksDB: the memory store drops
every partition it does not own actively when a recovery ends. The survivor
reads the dead worker's changelog partitions all along, so at the takeover it
reads only what its copy had not applied yet. The test counts the changelog
records the survivor reads (`timestamp_table_changelog_records_read_total`),
and measures the time from the kill to GETs answered from its table and to
commands processed on every partition.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import topic_end_offsets, wait_until

SESSION_TIMEOUT = 6
STANDBY = {"KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT), "TABLE_STORE": "rocksdb://"}
HISTORY = 10_000


async def changelog_reads(http, worker) -> dict[int, float]:
    """Changelog records this worker has read, by partition."""
    async with http.get(f"{worker.url}/metrics") as response:
        text = await response.text()
    return {int(sample.labels["partition"]): sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "timestamp_table_changelog_records_read"
            for sample in family.samples if sample.name.endswith("_total")}


async def served_from(http, worker, command_id: str) -> tuple[int, str | None]:
    async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
        return response.status, response.headers.get("X-Served-From")


async def produce(producer, topic: str, count: int) -> list[str]:
    """Commands keyed by their id, so each lands on the partition of its table key."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    sends = [await producer.send(topic, json.dumps({"command_id": i, "event_timestamp": "2021-06-01T12:00:00Z"})
                                 .encode(), key=i.encode()) for i in ids]
    await asyncio.gather(*sends)
    return ids


async def test_the_survivor_serves_a_killed_workers_keys_from_its_standby_copy(
        workers, namespace, http, producer, bootstrap_servers):
    await namespace.create_topic(8)
    first = await workers(**STANDBY).wait_ready(90)
    second = await workers(**STANDBY).wait_ready(90)
    ids = await produce(producer, namespace.topic, HISTORY)
    await namespace.wait_for_records(HISTORY, timeout=120)
    changelog = f"{namespace.app_id}-timestamps-changelog"

    async def standby_caught_up():
        # The second worker started with an empty changelog, so all it reads is its standby copy of the
        # first worker's partitions; caught up when it has read them to their end.
        reads, ends = await changelog_reads(http, second), await topic_end_offsets(bootstrap_servers, changelog)
        return reads if reads and all(reads[p] >= ends[p] for p in reads) else None

    standby = await wait_until(standby_caught_up, 60, "the second worker's standby copy at the changelog's end")
    standby_records = sum(standby.values())
    assert standby_records >= HISTORY / 4, standby  # about half the history lives on the first worker

    killed = time.monotonic()
    first.kill()

    sample = ids[::50]

    async def served_from_table():
        return all([await served_from(http, second, i) == (200, "table") for i in sample])

    await wait_until(served_from_table, 60, "the killed worker's keys served from the survivor's table",
                     interval=0.25)
    served_after = time.monotonic() - killed

    after = await produce(producer, namespace.topic, 80)  # on every partition
    await namespace.wait_for_records(HISTORY + len(after), timeout=60)
    processing_after = time.monotonic() - killed

    reads = await changelog_reads(http, second)
    read_at_takeover = sum(reads.get(p, 0) - standby[p] for p in standby)
    print(f"standby takeover: {standby_records:.0f} records in the standby copy; after SIGKILL the survivor "
          f"read {read_at_takeover:.0f} more, served the keys from its table after {served_after:.1f} s and "
          f"processed on every partition after {processing_after:.1f} s")
    # A full recovery would read the dead worker's partitions again: standby_records and more.
    assert read_at_takeover < standby_records / 4
    for command_id in sample:
        assert await served_from(http, second, command_id) == (200, "table")
    # The session timeout is most of it; a changelog replay is not part of it.
    assert served_after <= SESSION_TIMEOUT + 10
