"""A worker frozen (SIGSTOP) past its session timeout under load, then woken (SIGCONT): a zombie.

The group hands its partitions to the other worker, which processes them; the
zombie wakes up holding what it had fetched and may still write it to
PostgreSQL and the table's changelog. Required: no duplicate and no lost
command, its offset commit refused without crashing it or committing past a
row, and it rejoins the group and works again.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid

import pytest

from app.adapters.kafka_partitioner import key_partition
from tests.integration.conftest import assert_no_commit_past_a_missing_row, topic_end_offsets, wait_until
from tests.integration.helpers import run_cli, served_from

SESSION_SECONDS = 6  # the broker's group.min.session.timeout.ms
FROZEN_SECONDS = 3 * SESSION_SECONDS
ENV = {"KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_SECONDS), "BATCH_SIZE": "50"}
PARTITIONS = 8


async def produce_keyed(producer, topic: str, count: int, partitions: set[int] = frozenset(range(PARTITIONS))):
    """`count` commands keyed by their id, as POST sends them (the key picks the partition, and so the
    table partition of the row), each on one of `partitions`; returns the ids once the broker has them."""
    ids = []
    while len(ids) < count:
        command_id = str(uuid.uuid4())
        if key_partition(command_id.encode(), PARTITIONS) in partitions:
            ids.append(command_id)
    body = {"event_timestamp": "2021-06-01T12:00:00Z"}
    await asyncio.gather(*[await producer.send(topic, json.dumps({**body, "command_id": i}).encode(), key=i.encode())
                           for i in ids])
    return ids


async def metric(http, worker, pattern: str) -> list[str]:
    async with http.get(f"{worker.url}/metrics") as response:
        return re.findall(pattern, await response.text(), re.M)


async def rebalances(http, worker) -> float:
    return float((await metric(http, worker, r"^timestamp_rebalances_total (\S+)$"))[0])


async def assigned(http, worker) -> set[int]:
    """Partitions of the command topic the worker owns (the stall gauge has one sample each, every 5 s)."""
    return {int(p) for p in await metric(http, worker, r'^timestamp_partition_stall_seconds\{.*partition="(\d+)"')}


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
async def test_a_worker_frozen_past_its_session_loses_and_duplicates_nothing(workers, namespace, producer, http,
                                                                              store):
    await namespace.create_topic(PARTITIONS)
    zombie = await workers(TABLE_STORE=store, **ENV).wait_ready(90)
    other = await workers(TABLE_STORE=store, **ENV).wait_ready(90)

    ids: list[str] = []
    for partition in range(PARTITIONS):  # the lag gauge lists a partition once it has seen its end offset
        ids += await produce_keyed(producer, namespace.topic, 2, {partition})
    await namespace.wait_for_records(len(ids))

    async def split():
        mine, theirs = await assigned(http, zombie), await assigned(http, other)
        return (mine, theirs) if mine and theirs and mine | theirs == set(range(PARTITIONS)) else None

    zombies_partitions, _ = await wait_until(split, 60, "both workers to own partitions", interval=1)

    loading = True

    async def load():
        while loading:
            ids.extend(await produce_keyed(producer, namespace.topic, 40))
            await asyncio.sleep(0.1)

    loader = asyncio.create_task(load())
    try:
        await asyncio.sleep(3)  # under load, so the zombie is frozen holding fetched (likely in-flight) batches
        before = await rebalances(http, other)
        zombie.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            async def took_over():
                return await assigned(http, other) == set(range(PARTITIONS))

            # The broker expires the session (6 s), the other rejoins and is assigned everything, and the
            # stall gauge it is read from samples every 5 s: under the whole suite on 2 cores that once took
            # over 18 s. The zombie stays frozen meanwhile, only longer past its session.
            await wait_until(took_over, 2 * FROZEN_SECONDS, "the other worker to take every partition", interval=0.5)
            assert await rebalances(http, other) > before
            # The other worker processes the zombie's partitions while it is frozen.
            marked = await produce_keyed(producer, namespace.topic, 5 * len(zombies_partitions), zombies_partitions)
            ids.extend(marked)

            async def processed():
                return namespace.query("SELECT count(*) FROM timestamp_records WHERE id::text = ANY(%s)",
                                       (marked,))[0][0] == len(marked)

            await wait_until(processed, FROZEN_SECONDS, "the zombie's partitions to be processed by the other")
            await asyncio.sleep(max(0.0, FROZEN_SECONDS - (time.monotonic() - frozen_at)))
        finally:
            zombie.signal(signal.SIGCONT)

        async def rejoined():
            mine = await assigned(http, zombie)
            return mine and mine | await assigned(http, other) == set(range(PARTITIONS))

        await wait_until(rejoined, 90, "the zombie to rejoin the group and own partitions again", interval=1)
        await asyncio.sleep(3)  # the load goes on with the zombie back
    finally:
        loading = False
        await loader

    assert zombie.process.poll() is None and other.process.poll() is None
    # Fenced: the group no longer knew the zombie's member id (its heartbeat, or its commit when it had
    # one due first, was refused), and it went on with a new one.
    assert "member_id was not recognized" in zombie.log() or "UnknownMemberIdError" in zombie.log()
    rejoined_partitions = await assigned(http, zombie)
    ids.extend(await produce_keyed(producer, namespace.topic, 5 * len(rejoined_partitions), rejoined_partitions))

    ends = await topic_end_offsets(namespace.bootstrap_servers, namespace.topic)
    committed = await assert_no_commit_past_a_missing_row(namespace, ends, timeout=120)
    await namespace.wait_for_records(len(ids), timeout=60)
    assert namespace.query("SELECT count(*), count(DISTINCT id) FROM timestamp_records") == [(len(ids), len(ids))]
    assert namespace.query("SELECT status, count(*) FROM processed_events GROUP BY status") == [
        ("persisted", len(ids))]
    assert committed == ends
    assert "processing_error" not in zombie.log() + other.log()

    assert await served_from(http, zombie, ids) == {"table": len(ids)}

    audit = run_cli(namespace, "audit")
    assert "total: 0 messages missing" in audit.stdout, audit.stdout
    assert zombie.terminate()[0] == 0 and other.terminate()[0] == 0



def one_id_per_partition() -> dict[int, str]:
    ids: dict[int, str] = {}
    while len(ids) < PARTITIONS:
        command_id = str(uuid.uuid4())
        ids.setdefault(key_partition(command_id.encode(), PARTITIONS), command_id)
    return ids


async def test_a_zombie_holding_a_batch_leaves_no_hole_in_its_table_store(workers, namespace, producer, http):
    """Frozen between PostgreSQL and the table: on waking it writes the held row to the changelog, after the
    rows the other worker wrote meanwhile, and puts it in its store as the partition's owner it no longer is.
    That store's persisted changelog offset must not pass the other's rows: when the partition comes back,
    recovery starts after it, and rows below it would be missing from the table."""
    await namespace.create_topic(PARTITIONS)
    marked = one_id_per_partition()
    env = {**ENV, "TABLE_STORE": "rocksdb://"}
    zombie = await workers(FAULT_STAGE="hold", FAULT_COMMAND_IDS=",".join(marked.values()), FAULT_TIMES="1",
                           FAULT_HOLD_SECONDS="4", **env).wait_ready(90)
    other = await workers(**env).wait_ready(90)
    ids = []
    for partition in range(PARTITIONS):
        ids += await produce_keyed(producer, namespace.topic, 2, {partition})
    await namespace.wait_for_records(len(ids))

    async def split():
        mine, theirs = await assigned(http, zombie), await assigned(http, other)
        return mine if mine and theirs and mine | theirs == set(range(PARTITIONS)) else None

    partition = min(await wait_until(split, 60, "both workers to own partitions", interval=1))
    held = marked[partition]
    body = json.dumps({"command_id": held, "event_timestamp": "2021-06-01T12:00:00Z"}).encode()
    await producer.send_and_wait(namespace.topic, body, key=held.encode())

    async def in_postgres():  # written there; the zombie now holds the batch before the table
        return namespace.query("SELECT count(*) FROM timestamp_records WHERE id = %s", (held,))[0][0] == 1

    await wait_until(in_postgres, 10, "the held command's row", interval=0.05)
    zombie.signal(signal.SIGSTOP)
    try:
        ids += await produce_keyed(producer, namespace.topic, 20, {partition})  # the other's rows, once it owns it
        await namespace.wait_for_records(len(ids) + 1, timeout=FROZEN_SECONDS)
    finally:
        zombie.signal(signal.SIGCONT)
    ids.append(held)

    async def rejoined():
        mine = await assigned(http, zombie)
        return mine if mine and mine | await assigned(http, other) == set(range(PARTITIONS)) else None

    await wait_until(rejoined, 90, "the zombie to rejoin the group", interval=1)
    await asyncio.sleep(2 * SESSION_SECONDS)  # settled
    # The partition goes back to the zombie (the other stops): its store must hold the other's rows.
    assert other.terminate()[0] == 0

    async def owns_all():
        return await assigned(http, zombie) == set(range(PARTITIONS))

    await wait_until(owns_all, 90, "the zombie to own every partition", interval=1)
    await wait_until(lambda: _ready(http, zombie), 60, "the zombie to be ready (table recovered)", interval=1)
    assert await served_from(http, zombie, ids) == {"table": len(ids)}
    assert namespace.query("SELECT count(*), count(DISTINCT id) FROM timestamp_records") == [(len(ids), len(ids))]


async def _ready(http, worker) -> bool:
    async with http.get(f"{worker.url}/health/ready") as response:
        return response.status == 200
