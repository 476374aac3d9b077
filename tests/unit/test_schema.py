"""The column spec (app/adapters/schema.py) and what is generated from it, or written by hand to match it."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from app.adapters.schema import EVENTS, RECORDS, event_of_record
from app.domain.batch_plan import ConsumedMessage, plan_batch
from app.domain.commands import encode_command
from app.domain.records import SourcePosition
from app.ops.staging import STAGE_COLUMNS, stage_rows
from tests.unit.fakes import copy_fields

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=timezone.utc)


def plan():
    first = uuid.uuid4()
    return plan_batch([
        ConsumedMessage(SourcePosition("cmd", 1, 7), encode_command(first, "2024-02-29T13:00:00Z", NOW),
                        [("correlation_id", b"ING:x")]),
        ConsumedMessage(SourcePosition("cmd", 1, 8), b"garbage", [("correlation_id", b"ING:y")]),
        ConsumedMessage(SourcePosition("cmd", 1, 9), encode_command(first, "2024-02-29T13:00:00Z", NOW)),
    ], NOW)


def text(value) -> str | None:
    """A value as PostgreSQL would read it back from COPY text: uuids as hex, times in ISO 8601."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def test_stage_rows_write_the_stage_columns_in_their_order():
    batch = plan()
    staged = [dict(zip([c.name for c in STAGE_COLUMNS], copy_fields(line))) for line in stage_rows(batch).splitlines()]
    [record], skipped = batch.records, batch.skipped
    expected_record = {e.name: text(RECORDS[e.of_record].get(record)) for e in EVENTS.written if e.of_record}
    expected_record |= {"status": None, "error": None}
    expected_record |= {c.name: text(c.get(record)) for c in STAGE_COLUMNS if c.name not in expected_record}
    assert staged[0] == expected_record
    assert staged[1:] == [{c.name: text(c.get(e)) if c in EVENTS.written else None for c in STAGE_COLUMNS}
                          for e in skipped]


def test_a_selected_row_becomes_the_dataclass_it_came_from():
    batch = plan()
    record, event = batch.records[0], batch.skipped[0]
    assert RECORDS.from_row([c.get(record) for c in RECORDS.columns]) == record
    assert EVENTS.from_row([c.get(event) for c in EVENTS.columns]) == event


def test_the_arrays_of_a_batch_are_one_list_per_written_column():
    batch = plan()
    arrays = EVENTS.arrays(batch.skipped, prefix="s_")
    assert list(arrays) == [f"s_{c.name}" for c in EVENTS.written]
    assert arrays["s_offset"] == [8, 9] and arrays["s_status"] == ["invalid", "duplicate"]
    assert "created_at" not in RECORDS.arrays(batch.records)


def test_a_records_processed_events_row_copies_its_position_id_correlation_id_and_time():
    assert event_of_record("b", "S") == ('b."source_topic", b."source_partition", b."source_offset", b."id",'
                                         ' b."correlation_id", S, NULL, b."processed_at"')
