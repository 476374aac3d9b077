"""A message whose processing raises is isolated: dead-lettered, recorded as failed; the rest is written.

Faults are injected by tests/faulty_worker.py (test-only). Shutdown is bounded in every state.
"""

from __future__ import annotations

import pytest

from app.domain.dead_letters import describe
from app.ops.dead_letters import read_dead_letters
from tests.integration.conftest import committed_offsets, offsets_without_rows, wait_until
from tests.integration.conftest import assert_no_commit_past_a_missing_row
from tests.integration.helpers import produce_commands

PER_PARTITION = 10
PARTITIONS = range(4)


async def produce(producer, namespace) -> dict[int, list[str]]:
    await namespace.create_topic()
    return {p: await produce_commands(producer, namespace.topic, PER_PARTITION, p) for p in PARTITIONS}


@pytest.mark.parametrize("stage, error_type", [
    ("enrich", "RuntimeError"),    # a bug in enrichment
    ("database", "DataError"),     # PostgreSQL refuses the data
    ("table", "RuntimeError"),     # the table update raises after the rows committed
])
async def test_failing_messages_are_dead_lettered_and_the_rest_is_persisted(
        workers, namespace, producer, bootstrap_servers, stage, error_type):
    ids = await produce(producer, namespace)
    poison = [ids[0][3], ids[0][6], ids[2][9]]
    worker = await workers(FAULT_STAGE=stage, FAULT_COMMAND_IDS=",".join(poison), BATCH_SIZE="50").wait_ready()

    committed = await assert_no_commit_past_a_missing_row(namespace, {p: PER_PARTITION for p in PARTITIONS})
    assert offsets_without_rows(namespace, committed) == {}
    stored = {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")}
    everything = {i for batch in ids.values() for i in batch}
    statuses = dict(namespace.query("SELECT event_id::text, status FROM processed_events"))
    if stage == "table":  # its rows committed before the table raised: PostgreSQL has them
        assert stored == everything
        assert set(statuses.values()) == {"persisted"}
    else:
        assert stored == everything - set(poison)
        assert {i: s for i, s in statuses.items() if s != "persisted"} == {i: "failed" for i in poison}
        errors = [row[0] for row in namespace.query("SELECT error FROM processed_events WHERE status = 'failed'")]
        assert all(e.startswith(f"{error_type}: injected") for e in errors), errors

    async def three_letters():
        letters = await read_dead_letters(bootstrap_servers, f"{namespace.topic}.dlq")
        return letters if len(letters) >= 3 else None

    letters = await wait_until(three_letters, 30, "three dead letters")
    headers = [describe(letter.headers) for letter in letters]
    assert sorted((h["dlq.original.partition"], h["dlq.original.offset"]) for h in headers) == [
        ("0", "3"), ("0", "6"), ("2", "9")]
    assert {h["dlq.reason"] for h in headers} == {"processing_error"}
    assert {h["dlq.error.type"] for h in headers} == {error_type}
    assert all("injected" in h["dlq.error.message"] for h in headers)
    assert "Crashed reason" not in worker.log()


async def test_sigterm_during_a_failing_batch_ends_in_time_and_commits_nothing(workers, namespace, producer):
    ids = await produce(producer, namespace)
    failing = await workers(FAULT_STAGE="outage", SHUTDOWN_TIMEOUT_SECONDS="6", DATABASE_RETRY_MAX_SECONDS="1",
                            CIRCUIT_BREAKER_FAILURES="2", CIRCUIT_BREAKER_RESET_SECONDS="3").wait_ready()

    async def breaker_open():
        return "circuit breaker is open" in failing.log()

    await wait_until(breaker_open, 60, "the circuit breaker to open")
    code, seconds = failing.terminate(20)
    assert code == 0 and seconds < 6 + 3  # SHUTDOWN_TIMEOUT_SECONDS, and the time to start the clock
    committed = await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic)
    assert all(not offset for offset in committed.values()), committed
    assert namespace.query("SELECT count(*) FROM processed_events") == [(0,)]

    await workers().wait_ready()  # nothing was lost: the next worker writes all of it
    await namespace.wait_for_records(len(PARTITIONS) * PER_PARTITION)
    stored = {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")}
    assert stored == {i for batch in ids.values() for i in batch}


async def test_sigterm_right_after_the_agent_crashed_ends_in_time_and_loses_nothing(workers, namespace, producer):
    ids = await produce(producer, namespace)
    crashed = await workers(FAULT_STAGE="escape", FAULT_COMMAND_IDS=ids[1][4], BATCH_SIZE="5",
                            SHUTDOWN_TIMEOUT_SECONDS="6").wait_ready()

    async def crash():
        return "Crashed reason" in crashed.log()

    await wait_until(crash, 60, "the agent to crash")
    code, seconds = crashed.terminate(20)
    assert code == 0 and seconds < 6 + 3
    committed = await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic)
    assert offsets_without_rows(namespace, committed) == {}
    assert (committed.get(1) or 0) <= 4  # the batch that raised was never acknowledged

    await workers().wait_ready()
    committed = await assert_no_commit_past_a_missing_row(namespace, {p: PER_PARTITION for p in PARTITIONS})
    stored = {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")}
    assert stored == {i for batch in ids.values() for i in batch}
