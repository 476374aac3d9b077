"""The offset audit against the real broker and database: silent loss is found, reported and repaired."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import committed_offsets, topic_end_offsets, wait_until
from tests.worker_process import REPO

EVENTS_SQL = ('SELECT topic, partition, "offset", event_id::text, status FROM processed_events '
              'ORDER BY partition, "offset"')
RECORDS_SQL = ("SELECT id::text, event_timestamp, correlation_id, source_topic, source_partition, source_offset "
               "FROM timestamp_records ORDER BY id")


def command(n: int) -> tuple[bytes, bytes]:
    """(key, value) of a valid command in the seed format."""
    command_id = str(uuid.uuid4())
    value = json.dumps({"command_id": command_id, "event_timestamp": f"2024-02-29T12:{n % 60:02d}:00Z"})
    return command_id.encode(), value.encode()


async def produce(producer, topic: str, per_partition: dict[int, int]) -> None:
    """`count` valid commands into each given partition (explicit partitions: known offsets)."""
    sent = []
    for partition, count in per_partition.items():
        for n in range(count):
            key, value = command(n)
            sent.append(await producer.send(topic, value, key=key, partition=partition))
    for future in sent:
        await future


async def wait_until_committed(namespace) -> dict[int, int]:
    """Until the group has committed the end offset of every non-empty partition."""
    ends = {p: end for p, end in (await topic_end_offsets(namespace.bootstrap_servers, namespace.topic)).items() if end}

    async def all_committed():
        committed = await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic)
        return committed if all(committed.get(p) == end for p, end in ends.items()) else None

    return await wait_until(all_committed, 60, f"the group to commit {ends}", interval=0.5)


def lose(namespace, partition: int, start: int, stop: int) -> None:
    """Silent loss: the rows of [start, stop) of one partition vanish."""
    params = (namespace.topic, partition, start, stop)
    namespace.query('DELETE FROM processed_events WHERE topic = %s AND partition = %s AND "offset" >= %s '
                    'AND "offset" < %s RETURNING 1', params)
    namespace.query("DELETE FROM timestamp_records WHERE source_topic = %s AND source_partition = %s "
                    "AND source_offset >= %s AND source_offset < %s RETURNING 1", params)


def audit(namespace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "audit", *args], cwd=REPO, env=namespace.env(),
                          capture_output=True, text=True, timeout=300)


def gap_samples(body: str, name: str = "timestamp_audit_gap_messages") -> dict[str, float]:
    return {s.labels.get("partition", ""): s.value
            for family in text_string_to_metric_families(body) for s in family.samples if s.name == name}


async def metrics_body(http, worker) -> str:
    async with http.get(f"{worker.url}/metrics") as response:
        return await response.text()


async def test_audit_reports_the_exact_missing_ranges_and_repair_restores_the_same_rows(workers, namespace, producer):
    await namespace.create_topic()
    await produce(producer, namespace.topic, {p: 25 for p in range(8)})
    await producer.send_and_wait(namespace.topic, b"not json", partition=4)  # an invalid message has a row too
    worker = await workers().wait_ready()
    await namespace.wait_for_records(200)
    committed = await wait_until_committed(namespace)
    worker.stop()
    assert committed == {p: 26 if p == 4 else 25 for p in range(8)}
    events, records = namespace.query(EVENTS_SQL), namespace.query(RECORDS_SQL)
    assert len(events) == 201

    lose(namespace, 2, 10, 15)
    lose(namespace, 5, 0, 3)
    lose(namespace, 5, 24, 25)  # the last message below the committed offset

    found = audit(namespace)
    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert [line for line in lines if re.match(r"^\d+: \[", line)] == [
        "2: [10, 15) 5 messages", "5: [0, 3) 3 messages", "5: [24, 25) 1 message"]
    assert lines[-1] == "total: 9 messages missing in 3 ranges"
    assert any(line.split() == ["5", "25", "0", "21", "4"] for line in lines), found.stdout

    as_json = audit(namespace, "--json")
    assert as_json.returncode == 1, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["missing"] == 9
    assert {p["partition"]: p["gaps"] for p in report["partitions"] if p["gaps"]} == {
        2: [[10, 15]], 5: [[0, 3], [24, 25]]}
    assert {p["partition"]: p["committed"] for p in report["partitions"]} == committed
    assert await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic) == committed  # the audit never touched the group

    repaired = audit(namespace, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert re.search(r"^events read: +9$", repaired.stdout, re.M), repaired.stdout
    assert re.search(r"^rows inserted: +9$", repaired.stdout, re.M), repaired.stdout
    assert repaired.stdout.splitlines()[-1] == "total: 0 messages missing in 0 ranges"
    assert namespace.query(EVENTS_SQL) == events
    assert namespace.query(RECORDS_SQL) == records

    again = audit(namespace, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["missing"] == 0
    assert await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic) == committed


async def test_worker_exports_the_gaps_of_its_window_until_they_are_repaired(workers, namespace, producer, http):
    await namespace.create_topic()
    await produce(producer, namespace.topic, {p: 40 for p in range(8)})
    first = await workers().wait_ready()
    await namespace.wait_for_records(320)
    await wait_until_committed(namespace)
    first.stop()
    lose(namespace, 3, 25, 29)  # inside the worker's window [20, 40)
    lose(namespace, 6, 2, 4)  # below it: only `python -m app audit` sees these

    worker = await workers(AUDIT_INTERVAL_SECONDS="1", AUDIT_WINDOW_MESSAGES="20").wait_ready()

    async def gap_reported():
        gauges = gap_samples(await metrics_body(http, worker))
        return gauges if gauges.get("3") == 4 else None

    gauges = await wait_until(gap_reported, 60, "the worker to report 4 missing messages in partition 3")
    assert gauges == {str(p): (4 if p == 3 else 0) for p in range(8)}
    body = await metrics_body(http, worker)
    [last_run] = gap_samples(body, "timestamp_audit_last_success_timestamp_seconds").values()
    assert time.time() - 30 < last_run <= time.time() + 1
    assert "Offset audit: 4 messages below the committed offset" in worker.log()

    repaired = audit(namespace, "--repair", "--json")  # while the worker runs
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["repair"]["ranges"] == {"3": [[25, 29]], "6": [[2, 4]]}

    async def gap_cleared():
        gauges = gap_samples(await metrics_body(http, worker))
        return gauges if gauges and all(v == 0 for v in gauges.values()) else None

    await wait_until(gap_cleared, 30, "the gauge to return to 0 after the repair")
    await namespace.wait_for_records(320)


async def test_offsets_without_a_message_are_not_gaps(workers, namespace, producer, http):
    """Transaction markers (offsets 3 and 7 here) and offsets deleted below the log start."""
    await namespace.create_topic()
    transactional = AIOKafkaProducer(bootstrap_servers=namespace.bootstrap_servers,
                                     transactional_id=f"audit-test-{namespace.suffix}")
    await transactional.start()
    try:
        for _ in range(2):  # offsets 0-2 + marker 3, 4-6 + marker 7
            async with transactional.transaction():
                for n in range(3):
                    key, value = command(n)
                    await transactional.send(namespace.topic, value, key=key, partition=0)
    finally:
        await transactional.stop()
    await produce(producer, namespace.topic, {0: 1, 1: 20})  # offset 8 of partition 0: the markers are below it
    assert (await topic_end_offsets(namespace.bootstrap_servers, namespace.topic))[0] == 9

    worker = await workers(AUDIT_INTERVAL_SECONDS="1").wait_ready()
    await namespace.wait_for_records(27)
    assert (await wait_until_committed(namespace))[0] == 9
    committed_at = time.time()

    async def audited_after_commit():
        body = await metrics_body(http, worker)
        [last_run] = gap_samples(body, "timestamp_audit_last_success_timestamp_seconds").values()
        return gap_samples(body) if last_run > committed_at + 1 else None

    gauges = await wait_until(audited_after_commit, 30, "an audit after the commit")
    assert gauges["0"] == 0 and gauges["1"] == 0
    worker.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=namespace.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(namespace.topic, 1): RecordsToDelete(before_offset=10)})
    finally:
        await admin.close()
    lose(namespace, 1, 0, 10)  # gone from Kafka too: nothing left to check or replay

    result = audit(namespace, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = {p["partition"]: p for p in json.loads(result.stdout)["partitions"]}
    assert (report[0]["committed"], report[0]["rows"], report[0]["missing"]) == (9, 7, 0)
    assert (report[1]["log_start"], report[1]["committed"], report[1]["rows"], report[1]["missing"]) == (10, 20, 10, 0)


async def test_usage_errors_and_an_unknown_group(namespace):
    missing = audit(namespace, "--topic", f"no.such.topic.{namespace.suffix}")
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    await namespace.create_topic()
    unknown = audit(namespace, "--group", f"nobody-{namespace.suffix}")
    assert unknown.returncode == 0, unknown.stderr
    assert "has no committed offset" in unknown.stderr
    assert unknown.stdout.splitlines()[-1] == "total: 0 messages missing in 0 ranges"


async def test_a_failing_audit_logs_one_line_and_never_stops_the_worker(workers, namespace, http, producer):
    worker = await workers(AUDIT_INTERVAL_SECONDS="1", LOG_FORMAT="text").wait_ready()
    await produce(producer, namespace.topic, {0: 5})  # something committed, so the audit queries PostgreSQL
    await namespace.wait_for_records(5)
    await wait_until_committed(namespace)

    async def last_success():
        body = await metrics_body(http, worker)
        [value] = gap_samples(body, "timestamp_audit_last_success_timestamp_seconds").values()
        return value

    await wait_until(last_success, 30, "a first audit")
    namespace.query("ALTER TABLE processed_events RENAME TO processed_events_away")

    def failures() -> list[str]:
        return [line for line in worker.log().splitlines() if "Offset audit failed" in line]

    def failed(times: int):
        async def check():
            return len(failures()) >= times
        return check

    await wait_until(failed(2), 30, "two failed audits")
    stale = await last_success()
    await wait_until(failed(4), 30, "two more failed audits")
    assert await last_success() == stale
    assert worker.process.poll() is None
    assert re.fullmatch(r"\[WARNING\] .* - Offset audit failed \(next try in 1 s\): UndefinedTable: "
                        r'relation "processed_events" does not exist.*', failures()[0]), failures()[0]

    namespace.query("ALTER TABLE processed_events_away RENAME TO processed_events")

    async def succeeded_again():
        return await last_success() > stale

    await wait_until(succeeded_again, 30, "the audit to succeed again")


async def test_repair_processes_a_poison_message_in_a_gap_as_the_live_path_does(workers, namespace,
                                                                                  bootstrap_servers):
    from app.domain.dead_letters import describe
    from app.ops.dead_letters import read_dead_letters

    await namespace.create_topic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        await produce(producer, namespace.topic, {4: 3})
        await producer.send_and_wait(namespace.topic, b"[" * 5000 + b"]" * 5000, partition=4)
        await produce(producer, namespace.topic, {4: 2})
    finally:
        await producer.stop()
    worker = await workers().wait_ready()
    await wait_until_committed(namespace)
    worker.stop()
    before = namespace.query(EVENTS_SQL)
    lose(namespace, 4, 2, 5)  # a valid command, the poison, a valid command

    repaired = audit(namespace, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert [row[:3] + row[4:] for row in namespace.query(EVENTS_SQL)] == [row[:3] + row[4:] for row in before]
    assert namespace.query("SELECT error FROM processed_events WHERE \"offset\" = 3") == [
        ("message value nests deeper than 32 levels",)]
    letters = await read_dead_letters(bootstrap_servers, f"{namespace.topic}.dlq")
    # Once from the worker, once from the repair: dead letters are at least once, keyed by original position.
    assert sorted(describe(r.headers)["dlq.original.offset"] for r in letters) == ["3", "3"]
