"""The bulk loader's pure parts, and its hand-over of a failing batch to the live path's sink (fakes only)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import psycopg2
from aiokafka import TopicPartition

from app.domain.batch_plan import ConsumedMessage, plan_batch
from app.domain.commands import encode_command
from app.domain.records import SourcePosition
from app.ops import bulk_load
from app.ops.cli import BULK_BATCH_SIZE, BULK_CONNECTIONS
from app.ops.replay import BULK_BATCH_SIZE as REPLAY_BATCH_SIZE
from app.ops.replay import BULK_CONNECTIONS as REPLAY_CONNECTIONS
from app.sink.batch_writer import BatchWriter, no_dead_letters, no_table
from tests.unit.fakes import FakeDatabase, copy_fields

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=timezone.utc)


def test_stage_rows_are_the_plans_records_then_its_skipped_events():
    first, second = uuid.uuid4(), uuid.uuid4()
    messages = [
        ConsumedMessage(SourcePosition("cmd", 2, 10), encode_command(first, "2024-02-29T13:00:00.5+01:00", NOW),
                        [("correlation_id", b"ING:" + str(first).encode())]),
        ConsumedMessage(SourcePosition("cmd", 2, 11), b'{"command_id": "%s", "event_timestamp": "2024-01-01T00:00:00Z"}'
                        % str(second).encode()),
        ConsumedMessage(SourcePosition("cmd", 2, 12), b"garbage"),
        ConsumedMessage(SourcePosition("cmd", 2, 13), encode_command(first, "2024-02-29T13:00:00Z", NOW)),
    ]
    plan = plan_batch(messages, NOW)
    rows = [copy_fields(line) for line in bulk_load.stage_rows(plan).splitlines()]
    assert rows == [
        ["cmd", "2", "10", first.hex, f"ING:{first}", None, None, NOW.isoformat(),
         "2024-02-29T12:00:00.500000+00:00", NOW.isoformat()],
        ["cmd", "2", "11", second.hex, None, None, None, NOW.isoformat(), "2024-01-01T00:00:00+00:00", None],
        ["cmd", "2", "12", None, None, "invalid", "message value is not JSON", NOW.isoformat(), None, None],
        ["cmd", "2", "13", first.hex, None, "duplicate", None, NOW.isoformat(), None, None],
    ]


def test_stage_rows_escape_what_copy_would_read_as_separators():
    plan = plan_batch([ConsumedMessage(SourcePosition("t", 0, 0), b"x")], NOW)
    plan.skipped[0] = type(plan.skipped[0])(plan.skipped[0].source, None, None, "invalid", NOW,
                                            "tab\there\nnew line\\ and \r")
    [line] = bulk_load.stage_rows(plan).splitlines()
    assert copy_fields(line)[6] == "tab\there\nnew line\\ and \r"


def test_partitions_are_dealt_round_robin_into_groups():
    tps = [TopicPartition("t", p) for p in (5, 0, 3, 1, 2, 4)]
    groups = bulk_load.partition_groups(tps, 4)
    assert [bulk_load.group_name(g) for g in groups] == ["p0,4", "p1,5", "p2", "p3"]
    assert len(bulk_load.partition_groups(tps, 10)) == 6
    assert [bulk_load.group_name(g) for g in bulk_load.partition_groups(tps, 0)] == ["p0,1,2,3,4,5"]


def test_the_cli_shows_the_replays_defaults():
    assert (BULK_BATCH_SIZE, BULK_CONNECTIONS) == (REPLAY_BATCH_SIZE, REPLAY_CONNECTIONS)


class RefusingWriter:
    """A stage writer whose COPY fails as a data error would (not transient): the batch goes to the sink."""

    def __init__(self) -> None:
        self.writes = 0

    async def write(self, rows: str):
        self.writes += 1
        raise psycopg2.errors.DataError("invalid input syntax")

    async def run(self, function, *args):
        return 0  # no position recorded before


class Bar:
    n = 0

    def update(self, count: int) -> None:
        self.n += count


async def test_a_batch_the_bulk_write_refuses_goes_through_the_live_sink_which_isolates_it():
    messages = [ConsumedMessage(SourcePosition("t", 0, offset), encode_command(uuid.uuid4(), "2020-01-01T00:00:00Z", NOW))
                for offset in range(10)] + [ConsumedMessage(SourcePosition("t", 0, 10), b"garbage")]
    refused = plan_batch(messages[4:5], NOW).records[0].id
    database, bar = FakeDatabase(refuse={refused}), Bar()
    load = bulk_load.GroupLoad("unused:9092", "t", {}, RefusingWriter(), BatchWriter(
        database=database, send_dead_letters=no_dead_letters, update_table=no_table, topic="t"),
                               bulk_load.DecodeLimits(), 100, bar)
    plan = plan_batch(messages, NOW)

    await load._write(messages, plan, bulk_load.stage_rows(plan))

    assert load.writer.writes == 1
    assert (load.counts.events, load.counts.rows_inserted, load.counts.invalid, load.counts.failed) == (11, 9, 1, 1)
    assert load.counts.rows_already_present == 0 and load.counts.isolated_batches == 1
    assert {e.source.offset: e.status for e in database.events.values() if e.status != "persisted"} == {
        4: "failed", 10: "invalid"}
    assert bar.n == 11
