"""A partition Faust stopped fetching is found and fetched again, while the worker is busy with the others.

Seen in CI: after a rebalance cut a table recovery short, one partition of a
worker was never fetched again, with no error and no log line. Its end offset
in Faust's monitor came only from fetched records, so the stall detector,
which compared against it, was blind. The test leaves a partition paused as
Faust does during a rebalance (`tests/faulty_worker.py`, stage `paused`),
keeps the other partitions busy, and requires the commands on the paused one
to be processed anyway.
"""

from __future__ import annotations

import asyncio
import re
import signal

from tests.integration.conftest import wait_until
from tests.integration.helpers import produce_commands

PAUSED = 3
STARVED_SECONDS = 30  # app.faust_compat.stalls.STARVED_SECONDS


async def test_a_partition_left_paused_is_fetched_again_while_the_others_flow(workers, namespace, producer):
    await namespace.create_topic(8)
    worker = await workers(FAULT_STAGE="paused", FAULT_PARTITION=str(PAUSED)).wait_ready(90)
    await produce_commands(producer, namespace.topic, 1, PAUSED)
    await namespace.wait_for_records(1)

    worker.signal(signal.SIGUSR2)
    await wait_until(lambda: asyncio.sleep(0, b"paused" in worker.log_since_start()), 10, "the pause")
    stuck = await produce_commands(producer, namespace.topic, 5, PAUSED)

    busy = True
    sent = 0

    async def keep_the_others_busy():
        nonlocal sent
        while busy:
            for partition in set(range(8)) - {PAUSED}:
                await produce_commands(producer, namespace.topic, 2, partition)
                sent += 2
            await asyncio.sleep(0.2)

    def stuck_stored() -> int:
        return namespace.query("SELECT count(*) FROM timestamp_records WHERE id = ANY(%s::uuid[])", (stuck,))[0][0]

    others = asyncio.create_task(keep_the_others_busy())
    try:
        async def stuck_processed():
            return stuck_stored() == len(stuck)

        await asyncio.sleep(STARVED_SECONDS / 2)
        assert stuck_stored() == 0, "the paused partition was fetched without the detector: the fault did not take"
        await wait_until(stuck_processed, STARVED_SECONDS + 30, "the paused partition's commands to be processed")
    finally:
        busy = False
        await others
    log = worker.log_since_start().decode(errors="replace")
    assert re.search(rf"Partition {re.escape(namespace.topic)}\[{PAUSED}\] stalled at offset 1 of 6", log), log[-3000:]
    await namespace.wait_for_records(1 + len(stuck) + sent, timeout=60)
