"""One POST yields one trace: HTTP server -> Kafka produce -> agent processing -> database write.

The worker runs tests/integration/traced_worker.py, which keeps its finished
spans in memory and serves them at GET /test/spans.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import wait_until
from tests.worker_process import REPO, Worker

POST_ROUTE = "POST /api/v1/timestamp/{value}"
DB_SPAN = "INSERT timestamp_records"
KINDS = {"SERVER", "PRODUCER", "CONSUMER", "CLIENT"}


class TracedWorker(Worker):
    """A worker started through the test-only launcher that exposes its spans."""

    def command(self) -> list[str]:
        return [sys.executable, str(REPO / "tests" / "integration" / "traced_worker.py"), "worker",
                "--web-host", "127.0.0.1", "--web-port", str(self.port), "-l", "info"]


@pytest.fixture
def traced_worker(namespace, tmp_path: Path):
    worker = TracedWorker(namespace.env(), tmp_path / "traced-worker.log").start()
    yield worker
    worker.stop()


async def post_and_wait(http, worker: Worker, headers: dict | None = None) -> str:
    """POST a command, then wait until GET of its id answers 200."""
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z", headers=headers or {}) as response:
        assert response.status == 200, await response.text()
        command_id = (await response.json())["id"]

    async def readable():
        async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
            return response.status == 200

    await wait_until(readable, 30, f"GET of {command_id} to answer 200")
    return command_id


async def spans_of_command(http, worker: Worker, command_id: str) -> list[dict]:
    """All finished spans, once the command's produce, processing and database spans are all finished."""

    async def finished():
        async with http.get(f"{worker.url}/test/spans") as response:
            assert response.status == 200
            spans = await response.json()
        producers = [s for s in spans if s["kind"] == "PRODUCER"
                     and s["attributes"].get("messaging.message.id") == command_id]
        kinds = {s["kind"] for s in spans if s["name"] != "GET /test/spans"}
        db_spans = [s for s in spans if s["kind"] == "CLIENT" and s["name"] == DB_SPAN]
        # The consumer spans end after the database span: wait for as many as there are producers.
        consumers = [s for s in spans if s["kind"] == "CONSUMER"]
        done = producers and KINDS <= kinds and db_spans and len(consumers) >= sum(
            s["kind"] == "PRODUCER" for s in spans)
        return spans if done else None

    return await wait_until(finished, 30, f"spans of all four kinds for command {command_id}", interval=0.5)


def chain(spans: list[dict], command_id: str) -> dict[str, dict]:
    """The command's SERVER, PRODUCER, CONSUMER and CLIENT spans, each asserted in its place in one trace."""
    by_id = {s["span_id"]: s for s in spans}
    (producer,) = [s for s in spans if s["kind"] == "PRODUCER"
                   and s["attributes"].get("messaging.message.id") == command_id]
    assert producer["name"].startswith("send test.timestamp.command.")

    server = by_id.get(producer["parent_id"])
    assert server is not None, f"the PRODUCER span's parent {producer['parent_id']} is not a finished span"
    assert server["kind"] == "SERVER" and server["name"] == POST_ROUTE, server

    consumers = [s for s in spans if s["kind"] == "CONSUMER"]
    assert consumers, "no CONSUMER span"
    children = [s for s in consumers if s["parent_id"] == producer["span_id"]]
    assert len(children) == 1, (
        f"expected one CONSUMER span whose parent is the PRODUCER span {producer['span_id']} "
        f"(trace context carried in the Kafka headers); got {consumers}")
    (consumer,) = children
    assert consumer["name"] == f"process {producer['name'].removeprefix('send ')}"

    db_spans = [s for s in spans if s["kind"] == "CLIENT" and s["name"] == DB_SPAN]
    children = [s for s in db_spans if s["parent_id"] == consumer["span_id"]]
    assert len(children) == 1, (
        f"expected one CLIENT {DB_SPAN!r} span whose parent is the CONSUMER span {consumer['span_id']}; "
        f"got {db_spans}")
    (client,) = children

    found = {"SERVER": server, "PRODUCER": producer, "CONSUMER": consumer, "CLIENT": client}
    assert {s["trace_id"] for s in found.values()} == {server["trace_id"]}, found
    return found


async def test_one_post_yields_one_trace_of_four_span_kinds(traced_worker, http):
    worker = await traced_worker.wait_ready()

    # A POST without trace context starts a new trace at the server span.
    command_id = await post_and_wait(http, worker)
    spans = await spans_of_command(http, worker, command_id)
    first = chain(spans, command_id)
    assert first["SERVER"]["parent_id"] is None
    trace_spans = [s for s in spans if s["trace_id"] == first["SERVER"]["trace_id"]]
    assert {s["kind"] for s in trace_spans} == KINDS
    assert len(trace_spans) == 4, trace_spans

    # A POST carrying a W3C traceparent continues the caller's trace.
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    command_id = await post_and_wait(http, worker, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    spans = await spans_of_command(http, worker, command_id)
    second = chain(spans, command_id)
    assert second["SERVER"]["trace_id"] == trace_id
    assert second["SERVER"]["parent_id"] == parent_id
    assert {s["trace_id"] for s in second.values()} == {trace_id}
