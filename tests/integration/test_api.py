"""The v1 HTTP API of one worker, against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests import raw_http
from tests.integration.conftest import topic_end_offsets, wait_until
from tests.raw_http import raw_request


@pytest.fixture
async def worker(workers):
    return await workers().wait_ready()


async def get_when_persisted(http, base_url: str, command_id: str, timeout: float = 30) -> dict:
    async def fetch():
        async with http.get(f"{base_url}/api/v1/timestamp/{command_id}") as response:
            return await response.json() if response.status == 200 else None

    return await wait_until(fetch, timeout, f"GET of {command_id} to answer 200")


async def test_post_then_get_round_trip(worker, http, namespace):
    correlation_id = f"ING:{uuid.uuid4()}"
    async with http.post(
        f"{worker.url}/api/v1/timestamp/2009-09-28T21:03:12.25+02:00",
        headers={"X-Correlation-ID": correlation_id},
    ) as response:
        assert response.status == 200
        body = await response.json()
        assert response.headers["Location"] == f"/api/v1/timestamp/{body['id']}"
        assert response.headers["X-Correlation-ID"] == correlation_id
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"  # as Faust's json() answers
        assert await response.read() == f'{{"id":"{body["id"]}"}}'.encode()
    command_id = str(uuid.UUID(body["id"]))
    assert command_id == body["id"] and uuid.UUID(command_id).version == 4

    record = await get_when_persisted(http, worker.url, command_id)
    assert record["id"] == record["command_id"] == command_id
    assert record["event_timestamp"] == "2009-09-28T19:03:12.250000Z"
    assert record["correlation_id"] == correlation_id
    assert record["source_topic"] == namespace.topic
    assert all(isinstance(value, str) for value in record.values())
    assert {"created_at", "received_at", "processed_at", "source_partition", "source_offset"} <= set(record)

    rows = namespace.query(
        "SELECT event_timestamp AT TIME ZONE 'UTC', correlation_id FROM timestamp_records WHERE id = %s",
        (command_id,),
    )
    assert [(r[0].isoformat(), r[1]) for r in rows] == [("2009-09-28T19:03:12.250000", correlation_id)]
    events = namespace.query("SELECT event_id::text, status, correlation_id FROM processed_events")
    assert events == [(command_id, "persisted", correlation_id)]


@pytest.mark.parametrize("path", ["/api/v1/timestamp", "/app"])
async def test_post_without_timestamp_uses_the_current_time(worker, http, namespace, path):
    async with http.post(f"{worker.url}{path}") as response:
        assert response.status == 200
        command_id = (await response.json())["id"]
    record = await get_when_persisted(http, worker.url, command_id)
    assert record["event_timestamp"] <= record["processed_at"]
    assert record["event_timestamp"] == record["received_at"]


@pytest.mark.parametrize("timestamp", ["garbage", "2009-09-28", "2023-02-29T00:00:00Z", "2009-09-28T19:03:12"])
async def test_invalid_timestamp_gives_400_and_publishes_nothing(worker, http, namespace, bootstrap_servers, timestamp):
    before = await topic_end_offsets(bootstrap_servers, namespace.topic)
    async with http.post(f"{worker.url}/api/v1/timestamp/{timestamp}") as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["error"] == "invalid_timestamp"
    assert "YYYY-MM-DDThh:mm:ss" in body["message"]
    assert await topic_end_offsets(bootstrap_servers, namespace.topic) == before
    assert sum(before.values()) == 0


async def test_fractions_up_to_nanoseconds_are_truncated_and_longer_ones_refused(worker, http, namespace,
                                                                                  bootstrap_servers):
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12.123456789Z") as response:
        assert response.status == 200
        command_id = (await response.json())["id"]
    record = await get_when_persisted(http, worker.url, command_id)
    assert record["event_timestamp"] == "2009-09-28T19:03:12.123456Z"
    before = await topic_end_offsets(bootstrap_servers, namespace.topic)
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12.1234567891Z") as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"] == "invalid_timestamp" and "has 10 digits; at most 9" in body["message"]
    assert await topic_end_offsets(bootstrap_servers, namespace.topic) == before


async def test_get_errors_are_json(worker, http):
    async with http.get(f"{worker.url}/api/v1/timestamp/not-a-uuid") as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_id"
    unknown = uuid.uuid4()
    async with http.get(f"{worker.url}/api/v1/timestamp/{unknown}") as response:
        assert response.status == 404
        assert str(unknown) in (await response.json())["message"]
    async with http.get(f"{worker.url}/no/such/route") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"


async def test_health_and_correlation_ids(worker, http):
    async with http.get(f"{worker.url}/health", headers={"correlationId": str(uuid.uuid4())}) as response:
        assert response.status == 200
        assert await response.json() == {"status": "UP"}
    async with http.get(f"{worker.url}/health") as response:
        assert response.headers["X-Correlation-ID"].startswith("ING:")
    async with http.get(f"{worker.url}/health", headers={"X-Correlation-ID": "not valid"}) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_correlation_id"


async def test_seed_format_messages_from_other_producers_are_persisted(worker, http, namespace, producer):
    """Messages written straight to the topic, with any key or none, and one poison message."""
    ids = [str(uuid.uuid4()) for _ in range(6)]
    keys = [None, b"some-other-key", None, b"\x00\x01", ids[4].encode(), None]
    for command_id, key in zip(ids[:3], keys):
        value = json.dumps({"command_id": command_id, "event_timestamp": "2006-01-02T15:04:05Z"}).encode()
        await producer.send_and_wait(namespace.topic, value, key=key, partition=0)
    await producer.send_and_wait(namespace.topic, b"this is not json", partition=0)
    for command_id, key in zip(ids[3:], keys[3:]):
        value = json.dumps({"command_id": command_id, "event_timestamp": "2006-01-02T17:04:05+02:00"}).encode()
        await producer.send_and_wait(namespace.topic, value, key=key, partition=0)

    for command_id in ids:
        record = await get_when_persisted(http, worker.url, command_id)
        assert record["event_timestamp"] == "2006-01-02T15:04:05Z"
        assert "received_at" not in record
    statuses = namespace.query("SELECT status, count(*) FROM processed_events GROUP BY status ORDER BY status")
    assert statuses == [("invalid", 1), ("persisted", 6)]
    [(error,)] = namespace.query("SELECT error FROM processed_events WHERE status = 'invalid'")
    assert "not JSON" in error


async def test_exactly_once_guarantee_round_trip(workers, http, namespace):
    """PROCESSING_GUARANTEE=exactly_once (Kafka transactions over changelog and offsets)."""
    worker = await workers(PROCESSING_GUARANTEE="exactly_once").wait_ready()
    ids = []
    for second in range(5):
        async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:0{second}Z") as response:
            assert response.status == 200
            ids.append((await response.json())["id"])
    for command_id in ids:
        await get_when_persisted(http, worker.url, command_id)
    await namespace.wait_for_records(5)
    assert "TransactionManager" in worker.log()


async def test_oversized_requests_are_refused(worker, http):
    async with http.post(f"{worker.url}/api/v1/timestamp", data=b"x" * (65 * 1024)) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "request_too_large"


async def test_requests_the_http_parser_refuses_get_json_errors_and_one_log_line(worker, http):
    """aiohttp's parser refuses these before any middleware runs; they still get our error shape."""
    async with http.get(f"{worker.url}/health", headers={"X-Big": "y" * 9000}) as response:
        assert response.status == 400
        assert await response.json() == {
            "error": "header_too_large", "message": "each request header (name and value) is limited to 8190 bytes"}
        assert response.headers["X-Correlation-ID"].startswith("ING:")
    async with http.get(f"{worker.url}/api/v1/timestamp/{'9' * 5000}") as response:
        assert response.status == 400
        assert (await response.json())["error"] == "request_line_too_long"
    status, headers, body = await raw_request(worker.port, b"GET /health HTTP/1.1 junk\r\nHost: x\r\n\r\n")
    assert status == 400 and headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["error"] == "bad_request" and answer["message"].startswith("malformed HTTP request: ")
    async with http.get(f"{worker.url}/health") as response:  # and the worker is fine
        assert response.status == 200

    log = worker.log()
    assert log.count("Refused a malformed HTTP request") == 3
    for bad in ("header_too_large", "request_line_too_long", "bad_request"):
        [line] = [line for line in log.splitlines() if "Refused a malformed HTTP request" in line and bad in line]
        assert json.loads(line)["log.level"] == "warning"
    assert "Traceback" not in log and "stack_trace" not in log and "Error handling request" not in log


@pytest.mark.parametrize("method, path, allowed", [
    ("DELETE", "/health", "GET, HEAD"),
    ("PUT", "/api/v1/timestamp/2009-09-28T19:03:12Z", "GET, HEAD, POST"),
    ("TRACE", "/api/v1/events", "GET, HEAD"),
    ("GET", "/app", "POST"),
    ("GET", "/api/v1/timestamp", "POST"),
])
async def test_method_not_allowed_names_the_allowed_methods(worker, http, method, path, allowed):
    async with http.request(method, f"{worker.url}{path}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == allowed
        body = await response.json()
    assert body == {"error": "method_not_allowed",
                    "message": f"{method} {path}: method not allowed; allowed: {allowed}"}


async def test_head_of_a_post_only_path_is_405_with_allow(worker, http):
    """Faust registers HEAD on every view; where there is no GET to answer it, it is a 405 too."""
    async with http.head(f"{worker.url}/app") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
    async with http.head(f"{worker.url}/health") as response:
        assert response.status == 200


async def test_every_correlation_id_header_sent_is_validated(worker, http):
    good = f"ING:{uuid.uuid4()}"
    async with http.get(f"{worker.url}/health", headers={"X-Correlation-ID": good, "correlationId": "junk"}) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"] == "invalid_correlation_id" and body["message"].startswith("header correlationId: ")
    async with http.get(f"{worker.url}/health", headers={"X-Request-ID": f"  {good}  ", "correlationId": good}) as response:
        assert response.status == 200
        assert response.headers["X-Correlation-ID"] == good


@pytest.mark.parametrize("query, message", [
    ("", "query parameter correlation_id is required"),
    ("?correlation_id=", "query parameter correlation_id is empty"),
])
async def test_events_without_a_correlation_id_value_say_so(worker, http, query, message):
    async with http.get(f"{worker.url}/api/v1/events{query}") as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"] == "missing_correlation_id" and body["message"].startswith(message)


async def test_post_bodies_are_ignored_but_bounded_with_content_length_or_chunked(worker, namespace,
                                                                                 bootstrap_servers):
    """The API reads no body (the timestamp is in the path): one that ends within 64 KiB is ignored, a larger
    or endless one refused before anything is published, whether it came with a Content-Length or chunked."""
    path = "/api/v1/timestamp/2020-01-01T00:00:00Z"
    host, port = worker.url.removeprefix("http://").split(":")

    async def send(request: bytes) -> raw_http.Answer:
        return await raw_http.send(host, int(port), request)

    for request in (raw_http.chunked(path, [b'{"ignored":', b" true}"]), raw_http.sized(path, 2, b"{}")):
        answer = await send(request)
        assert answer.status == 200 and "id" in answer.json()
    before = await topic_end_offsets(bootstrap_servers, namespace.topic)
    assert sum(before.values()) == 2

    too_large = await send(raw_http.chunked(path, [b"x" * 65536] * 16))  # 1 MiB
    assert (too_large.status, too_large.json()) == (413, {
        "error": "request_too_large", "message": "the chunked request body is over the 65536 bytes allowed"})
    declared = await send(raw_http.sized(path, 1 << 20, b"x" * 1000))
    assert (declared.status, declared.json()) == (413, {
        "error": "request_too_large", "message": "the request body (Content-Length 1048576) is over the 65536 "
                                                 "bytes allowed"})
    never_ends = await asyncio.gather(send(raw_http.chunked(path, [b"{"], finish=False)),
                                      send(raw_http.sized(path, 100, b"{")))
    assert [(answer.status, answer.json()) for answer in never_ends] == [
        (408, {"error": "request_timeout", "message": "the request body (chunked) did not end within 10 s "
                                                      "(1 byte received)"}),
        (408, {"error": "request_timeout", "message": "the request body (Content-Length 100) did not end within "
                                                      "10 s (1 byte received)"}),
    ]
    assert await topic_end_offsets(bootstrap_servers, namespace.topic) == before
