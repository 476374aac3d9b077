"""Overload: POSTs past MAX_IN_FLIGHT_PUBLISHES, and requests that waited past MAX_REQUEST_WAIT_SECONDS,
are shed at once (503 + Retry-After), and nothing accepted is lost.

Against real workers and brokers. The first test freezes a broker of its own
(SIGSTOP, like a long GC pause or a partition), so that every publish waits on
it and the limit is reached deterministically, and shows that the shed POSTs
are answered while the accepted ones are still waiting: shedding never waits
for the broker. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import wait_until

POST_PATH = "/api/v1/timestamp/2024-02-29T12:00:00Z"


SHED = "timestamp_http_requests_shed_total"


async def metric(http, worker, name: str, **labels: str) -> float:
    async with http.get(f"{worker.url}/metrics") as response:
        text = await response.text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())


async def post(http, worker) -> tuple[int, dict, dict]:
    async with http.post(worker.url + POST_PATH) as response:
        return response.status, dict(response.headers), await response.json()


def assert_shed(status: int, headers: dict, body: dict) -> None:
    assert status == 503, (status, body)
    assert headers.get("Retry-After") == "1", headers
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    assert body["error"] == "overloaded" and body["message"], body


async def test_posts_past_the_limit_are_shed_while_the_accepted_ones_still_wait_for_the_broker(
        own_broker, workers, http, namespace):  # noqa: F811
    worker = await workers(KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap, MAX_IN_FLIGHT_PUBLISHES="5",
                           PUBLISH_TIMEOUT_SECONDS="120", MAX_REQUEST_WAIT_SECONDS="60").wait_ready()
    async with http.post(worker.url + POST_PATH) as response:  # the publisher is connected
        assert response.status == 200
        first = (await response.json())["id"]

    os.kill(own_broker.pid, signal.SIGSTOP)
    try:
        waiting = [asyncio.create_task(post(http, worker)) for _ in range(5)]

        async def limit_reached():
            return await metric(http, worker, "timestamp_command_publishes_in_flight") == 5

        await wait_until(limit_reached, 30, "5 publishes in flight")
        shed = await asyncio.gather(*(post(http, worker) for _ in range(20)))
        for answer in shed:
            assert_shed(*answer)
        assert not any(task.done() for task in waiting), "a POST was answered before the broker acknowledged it"
        assert await metric(http, worker, SHED, reason="publishes_in_flight", method="POST") == 20
    finally:
        os.kill(own_broker.pid, signal.SIGCONT)
    assert "Shedding requests (answered 503 overloaded): 1 publishes_in_flight" in worker.log()

    accepted = await asyncio.gather(*waiting)
    assert [status for status, _, _ in accepted] == [200] * 5
    ids = {first} | {body["id"] for _, _, body in accepted}
    await namespace.wait_for_records(6)
    assert {str(row[0]) for row in namespace.query("SELECT id FROM timestamp_records")} == ids


@pytest.mark.parametrize("limits, reason", [
    ({"MAX_IN_FLIGHT_PUBLISHES": "2"}, "publishes_in_flight"),
    # Waiting a millisecond is too long: requests read together are shed but the first ones.
    ({"MAX_IN_FLIGHT_PUBLISHES": "100000", "MAX_REQUEST_WAIT_SECONDS": "0.001"}, "waited"),
], ids=["in-flight-limit", "wait-limit"])
async def test_a_burst_far_past_the_limit_gets_200_or_a_503_and_every_200_is_persisted(
        workers, namespace, limits, reason):
    worker = await workers(**limits).wait_ready()
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        answers = await asyncio.gather(*(post(http, worker) for _ in range(1500)))
        statuses = collections.Counter(status for status, _, _ in answers)
        assert set(statuses) <= {200, 503}, statuses
        for answer in answers:
            if answer[0] == 503:
                assert_shed(*answer)
        assert statuses[503] > 0, statuses
        assert await metric(http, worker, SHED) == statuses[503]
        assert await metric(http, worker, SHED, reason=reason) > 0
    accepted = {body["id"] for status, _, body in answers if status == 200}
    await namespace.wait_for_records(len(accepted), timeout=120)
    # Exactly the accepted commands: none lost, and a shed POST never reached the broker.
    assert {str(row[0]) for row in namespace.query("SELECT id FROM timestamp_records")} == accepted
