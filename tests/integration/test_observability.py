"""Metrics, logs, health probes and the processed-events look-up of a real worker."""

from __future__ import annotations

import json
import re
import subprocess
import uuid

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import wait_until
from tests.metric_names import exposed_metric_names, referenced_metric_names
from tests.promtool import promtool_path


async def post_and_wait(http, worker, namespace, correlation_id: str) -> str:
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z",
                         headers={"X-Correlation-ID": correlation_id}) as response:
        assert response.status == 200
        command_id = (await response.json())["id"]

    async def persisted():
        return namespace.query("SELECT 1 FROM timestamp_records WHERE id = %s", (command_id,))

    await wait_until(persisted, 30, f"{command_id} to be persisted")
    return command_id


def samples(body: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_cover_rules_and_dashboards_and_pass_promtool(workers, http, namespace):
    worker = await workers(LOG_FORMAT="json").wait_ready()
    await post_and_wait(http, worker, namespace, f"ING:{uuid.uuid4()}")
    async with http.request("PROPFIND", f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
        assert response.status == 405  # a WebDAV method: counted, but not as a label of its own

    async def lag_is_zero():
        async with http.get(f"{worker.url}/metrics") as response:
            body = await response.text()
        values = samples(body)
        lags = [v for (name, _), v in values.items() if name == "timestamp_consumer_lag_messages"]
        return body if lags and all(v == 0 for v in lags) else None

    body = await wait_until(lag_is_zero, 30, "consumer lag to be reported and reach 0", interval=1)
    assert referenced_metric_names() - exposed_metric_names(body) == set()
    values = samples(body)
    assert values[("timestamp_commands_published_total", ())] == 1
    assert values[("timestamp_events_processed_total", (("outcome", "persisted"),))] == 1
    assert values[("timestamp_events_processed_total", (("outcome", "invalid"),))] == 0
    assert values[("timestamp_table_keys", ())] == 1
    assert values[("timestamp_end_to_end_latency_seconds_count", ())] == 1
    route = (("method", "POST"), ("route", "/api/v1/timestamp/{value}"), ("status", "200"))
    assert values[("timestamp_http_requests_total", route)] == 1
    webdav = (("method", "other"), ("route", "unmatched"), ("status", "405"))  # no route has the method
    assert values[("timestamp_http_requests_total", webdav)] == 1
    assert not [labels for _, labels in values if ("method", "PROPFIND") in labels]
    assert any(name.startswith("faust_") for name, _ in values)
    ends = {dict(labels)["partition"]: v for (name, labels), v in values.items()
            if name == "faust_topic_partition_end_offset" and dict(labels)["topic"] == namespace.topic}
    assert sum(ends.values()) == 1  # the one command, read at scrape from what the fetcher saw
    assert values[("timestamp_gc_frozen_objects", ())] > 10_000  # start-up's objects, out of full collections
    assert values[("timestamp_gc_young_threshold", ())] == 50_000  # app/main.py's YOUNG_COLLECTION_THRESHOLD

    checked = subprocess.run([promtool_path(), "check", "metrics"], input=body, capture_output=True, text=True)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


async def test_json_logs_carry_correlation_and_trace_ids(workers, http, namespace, producer):
    worker = await workers(LOG_FORMAT="json").wait_ready()
    correlation_id = f"ING:{uuid.uuid4()}"
    command_id = await post_and_wait(http, worker, namespace, correlation_id)
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    [accepted] = [line for line in lines if "Accepted command" in line["message"]]
    assert accepted["correlation_id"] == correlation_id
    assert accepted["service"]["name"] == "timestamp-pipeline"
    assert accepted["log.level"] == "info"
    assert accepted["@timestamp"].endswith("Z")
    assert re.fullmatch(r"[0-9a-f]{32}", accepted["trace"]["id"])
    assert re.fullmatch(r"[0-9a-f]{16}", accepted["span"]["id"])
    assert command_id in accepted["message"]

    # An event the agent rejects is logged with the correlation id of its message.
    bad_correlation = f"ING:{uuid.uuid4()}"
    await producer.send_and_wait(namespace.topic, b"not json", headers=[("correlation_id", bad_correlation.encode())])

    async def skipped_line():
        return [json.loads(line) for line in worker.log().splitlines()
                if line.startswith("{") and bad_correlation in line and "Skipped message" in line]

    [skipped] = await wait_until(skipped_line, 30, "the invalid message to be logged")
    assert skipped["correlation_id"] == bad_correlation
    assert skipped["log.level"] == "warning"


async def test_text_logs_follow_the_seed_pattern(workers, http, namespace):
    worker = await workers(LOG_FORMAT="text").wait_ready()
    correlation_id = f"ING:{uuid.uuid4()}"
    await post_and_wait(http, worker, namespace, correlation_id)
    pattern = re.compile(rf"^\[INFO\] \[corr_id={re.escape(correlation_id)}\] timestamp-pipeline - Accepted command ")
    assert any(pattern.match(line) for line in worker.log().splitlines())


async def test_processed_events_by_correlation_id(workers, http, namespace):
    worker = await workers().wait_ready()
    correlation_id = str(uuid.uuid4())
    command_id = await post_and_wait(http, worker, namespace, correlation_id)
    async with http.get(f"{worker.url}/api/v1/events", params={"correlation_id": correlation_id}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["correlation_id"] == correlation_id
    [event] = body["events"]
    assert event["event_id"] == command_id
    assert event["status"] == "persisted"
    assert event["topic"] == namespace.topic
    async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
        assert (await response.json())["correlation_id"] == correlation_id
    for params, error in [({}, "missing_correlation_id"), ({"correlation_id": "x; DROP TABLE"}, "invalid_correlation_id")]:
        async with http.get(f"{worker.url}/api/v1/events", params=params) as response:
            assert response.status == 400
            assert (await response.json())["error"] == error


async def test_readiness_reports_each_dependency(workers, http, namespace):
    worker = await workers().wait_ready()
    async with http.get(f"{worker.url}/health/ready") as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "UP"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "kafka": "UP", "consumer": "UP", "postgres": "UP", "table_recovery": "UP", "table_store": "UP",
        "circuit_breaker": "UP"}


async def test_readiness_fails_without_postgres_while_liveness_holds(workers, http, namespace):
    from tests.worker_process import free_port

    worker = await workers(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere").wait_ready()
    async with http.get(f"{worker.url}/health/ready") as response:
        assert response.status == 503
        body = await response.json()
    assert body["checks"]["postgres"]["status"] == "DOWN"
    assert body["checks"]["kafka"]["status"] == "UP"
    async with http.get(f"{worker.url}/health/live") as response:
        assert response.status == 200
