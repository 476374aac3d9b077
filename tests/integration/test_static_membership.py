"""KAFKA_GROUP_INSTANCE_ID: a worker restarted within the session timeout moves no partition.

Counted on the worker that stays up (`timestamp_rebalances_total` on
/metrics); the same restart without static membership is the control, and
does rebalance it.
"""

from __future__ import annotations

import asyncio
import re

from tests.integration.conftest import wait_until

SESSION = {"KAFKA_SESSION_TIMEOUT_SECONDS": "30"}


async def rebalances(http, worker) -> float:
    async with http.get(f"{worker.url}/metrics") as response:
        text = await response.text()
    return float(re.search(r"^timestamp_rebalances_total (\S+)$", text, re.M).group(1))


async def settled(http, worker, quiet_seconds: float = 6.0) -> float:
    """The rebalance count once it has not moved for `quiet_seconds` (the group is stable)."""
    last = await rebalances(http, worker)
    while True:
        await asyncio.sleep(quiet_seconds)
        now = await rebalances(http, worker)
        if now == last:
            return now
        last = now


async def restart_second_worker(workers, namespace, http, static: bool) -> tuple[float, float]:
    await namespace.create_topic(8)
    ids = ({"KAFKA_GROUP_INSTANCE_ID": "worker-a"}, {"KAFKA_GROUP_INSTANCE_ID": "worker-b"}) if static else ({}, {})
    first = await workers(**SESSION, **ids[0]).wait_ready(90)
    second = await workers(**SESSION, **ids[1]).wait_ready(90)
    before = await settled(http, first)
    code, _ = second.terminate()
    assert code == 0
    again = await workers(port=second.port, **SESSION, **ids[1]).wait_ready(90)  # the same address, like a pod
    async with http.get(f"{again.url}/health/live") as response:
        assert response.status == 200
    if not static:
        # Without static membership the leave, then the join, each rebalance the group.
        await wait_until(lambda: _more(http, first, before), 60, "a rebalance of the first worker")
    return before, await settled(http, first)


async def _more(http, worker, than: float) -> bool:
    return await rebalances(http, worker) > than


async def test_a_restart_within_the_session_timeout_moves_no_partition(workers, namespace, http):
    before, after = await restart_second_worker(workers, namespace, http, static=True)
    assert after == before


async def test_without_static_membership_the_same_restart_rebalances(workers, namespace, http):
    before, after = await restart_second_worker(workers, namespace, http, static=False)
    assert after > before
