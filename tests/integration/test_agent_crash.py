"""An exception while processing a batch never lets an offset be committed past an unprocessed message.

Before the fix a batch that raised crashed the agent, and Faust acknowledged the
messages it had already fetched while the agent restarted, unprocessed: the
group's offsets reached the end of the topic with commands missing from
PostgreSQL (docs/design.md, "When a batch raises").
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import assert_no_commit_past_a_missing_row, offsets_without_rows
from tests.integration.helpers import produce_commands

TOTAL = 60


def assert_every_committed_message_has_its_row(namespace, committed: dict, ids: list[str]) -> None:
    assert offsets_without_rows(namespace, committed) == {}
    stored = [row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")]
    assert sorted(stored) == sorted(ids)


async def test_a_nested_array_on_every_partition_loses_nothing(workers, namespace, producer):
    """The minimal reproduction, with the issue's trigger: json.loads raised RecursionError.

    Before the fix the agent crash-looped and Faust acknowledged messages it had
    fetched while the agent restarted: the offsets reached the end of every
    partition with half the valid commands missing, and SIGTERM hung.
    """
    await namespace.create_topic()
    ids = []
    for partition in range(8):
        ids += await produce_commands(producer, namespace.topic, 3, partition)
        await producer.send_and_wait(namespace.topic, b"[" * 5000 + b"]" * 5000, partition=partition)
        ids += await produce_commands(producer, namespace.topic, 4, partition)
    worker = await workers().wait_ready()

    committed = await assert_no_commit_past_a_missing_row(namespace, {p: 8 for p in range(8)})
    assert_every_committed_message_has_its_row(namespace, committed, ids)
    assert namespace.query("SELECT status, error FROM processed_events WHERE status <> 'persisted'") == [
        ("invalid", "message value nests deeper than 32 levels")] * 8

    code, seconds = worker.terminate()
    assert code == 0 and seconds < 30


@pytest.mark.parametrize("iterator", ["cython", "python"])
async def test_an_exception_escaping_the_agent_commits_nothing_past_it(workers, namespace, producer, iterator):
    """Defence in depth: even a bug outside the sink's isolation (the agent crashes) loses nothing.

    Runs on both of Faust's stream iterators (NO_CYTHON selects the pure-Python one).
    """
    await namespace.create_topic()
    ids = await produce_commands(producer, namespace.topic, TOTAL)
    env = {"NO_CYTHON": "1"} if iterator == "python" else {}
    worker = await workers(FAULT_STAGE="escape", FAULT_TIMES="1", FAULT_COMMAND_IDS=ids[25], BATCH_SIZE="10",
                           **env).wait_ready()
    assert f"Stream iterator: {iterator}" in worker.log()

    committed = await assert_no_commit_past_a_missing_row(namespace, {0: TOTAL})
    assert "injected fault escaping the sink" in worker.log() and "Crashed reason" in worker.log()
    assert_every_committed_message_has_its_row(namespace, committed, ids)
    assert namespace.query("SELECT count(*) FROM processed_events") == [(TOTAL,)]

    code, seconds = worker.terminate()
    assert code == 0 and seconds < 30
