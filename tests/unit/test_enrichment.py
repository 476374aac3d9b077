import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from msgspec.structs import replace

from app.domain.batch_plan import ConsumedMessage, plan_batch
from app.domain.commands import encode_command
from app.domain.records import SourcePosition, TimestampRecord, canonical_id, key_of
from app.domain.rfc3339 import parse_rfc3339, utc_now

UTC = timezone.utc
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 22, 11, 59, 59, tzinfo=UTC)


def message(offset: int, value: bytes | None, headers=()) -> ConsumedMessage:
    return ConsumedMessage(SourcePosition("timestamp.command.v1", 3, offset), value, headers)


def test_valid_message_is_enriched_with_provenance_and_times():
    command_id = uuid.uuid4()
    value = encode_command(command_id, "2009-09-28T21:03:12+02:00", RECEIVED)
    corr = f"ING:{uuid.uuid4()}"
    plan = plan_batch([message(7, value, [("correlation_id", corr.encode())])], processed_at=NOW)
    [record] = plan.records
    assert record.id == command_id
    assert record.event_timestamp == datetime(2009, 9, 28, 19, 3, 12, tzinfo=UTC)
    assert record.received_at == RECEIVED
    assert record.processed_at == NOW
    assert record.correlation_id == corr
    assert record.source == SourcePosition("timestamp.command.v1", 3, 7)
    assert plan.skipped == []


def test_view_is_flat_strings_with_utc_z_times():
    command_id = uuid.uuid4()
    plan = plan_batch([message(1, encode_command(command_id, "2009-09-28T21:03:12+02:00", RECEIVED))], NOW)
    view = plan.records[0].as_view()
    assert view["id"] == view["command_id"] == str(command_id)
    assert view["event_timestamp"] == "2009-09-28T19:03:12Z"
    assert view["received_at"] == "2026-11-22T11:59:59Z"
    assert view["source_offset"] == "1"
    assert all(isinstance(v, str) for v in view.values())
    assert "correlation_id" not in view  # unknown values are left out, not null


def test_invalid_messages_are_skipped_and_logged_as_processed_events():
    corr = f"ING:{uuid.uuid4()}"
    plan = plan_batch([message(1, b"nope", [("correlation_id", corr.encode())])], NOW)
    assert plan.records == []
    [event] = plan.processed_events(inserted_ids=set())
    assert event.status == "invalid"
    assert "not JSON" in event.error
    assert event.correlation_id == corr
    assert event.source.offset == 1


def test_repeated_command_in_one_batch_is_inserted_once_and_recorded_as_duplicate():
    command_id = uuid.uuid4()
    value = encode_command(command_id, "2009-09-28T19:03:12Z", RECEIVED)
    plan = plan_batch([message(1, value), message(2, value)], NOW)
    assert [r.source.offset for r in plan.records] == [1]
    statuses = {e.source.offset: e.status for e in plan.processed_events({command_id})}
    assert statuses == {1: "persisted", 2: "duplicate"}


def test_already_stored_ids_are_recorded_as_duplicates():
    first, second = uuid.uuid4(), uuid.uuid4()
    plan = plan_batch(
        [message(1, encode_command(first, "2009-09-28T19:03:12Z", RECEIVED)),
         message(2, encode_command(second, "2009-09-28T19:03:12Z", RECEIVED))],
        NOW,
    )
    statuses = {e.event_id: e.status for e in plan.processed_events({second})}
    assert statuses == {first: "duplicate", second: "persisted"}


def test_malformed_correlation_header_is_dropped_not_trusted():
    value = encode_command(uuid.uuid4(), "2009-09-28T19:03:12Z", RECEIVED)
    plan = plan_batch([message(1, value, [("correlation_id", b"ING:<script>")])], NOW)
    assert plan.records[0].correlation_id is None


def test_dead_letter_keeps_key_value_and_names_reason_and_origin():
    from app.domain.dead_letters import dead_letter, describe

    corr = f"ING:{uuid.uuid4()}"
    raw = ConsumedMessage(SourcePosition("timestamp.command.v1", 3, 9), b"nope", [("correlation_id", corr.encode())],
                          key=b"k")
    [event] = plan_batch([raw], NOW).skipped
    letter = dead_letter(raw, event)
    assert (letter.key, letter.value) == (b"k", b"nope")
    assert describe(letter.headers) == {
        "dlq.reason": "message value is not JSON", "dlq.original.topic": "timestamp.command.v1",
        "dlq.original.partition": "3", "dlq.original.offset": "9", "correlation_id": corr}


def test_same_message_fetched_twice_in_a_batch_counts_once():
    value = encode_command(uuid.uuid4(), "2009-09-28T19:03:12Z", RECEIVED)
    plan = plan_batch([message(4, value), message(4, value), message(5, b"bad"), message(5, b"bad")], NOW)
    assert len(plan.records) == 1
    assert [e.source.offset for e in plan.processed_events(set())] == [4, 5]


@pytest.mark.parametrize("correlation_id", [None, "ING:1", 'quote " back\\slash \u00e9 \n'])
@pytest.mark.parametrize("received", [True, False])
def test_record_json_is_its_view_encoded(correlation_id, received):
    record = TimestampRecord(
        id=uuid.uuid4(), event_timestamp=parse_rfc3339("2009-09-28T19:03:12.5+02:00"),
        received_at=utc_now() if received else None, processed_at=utc_now(), correlation_id=correlation_id,
        source=SourcePosition("timestamp.command.v1", 3, 12345),
    )
    created = utc_now()
    assert json.loads(record.as_json()) == record.as_view()
    assert json.loads(record.as_json(created_at=created)) == replace(record, created_at=created).as_view()


@pytest.mark.parametrize("correlation_id", [None, "ING:add1f52d-7c56-4c9f-b319-1a266c355f6b"])
@pytest.mark.parametrize("received", [True, False])
@pytest.mark.parametrize("created_at", [
    None, datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc),  # no fraction: no digits, as isoformat
    datetime(2020, 1, 2, 3, 4, 5, 120, tzinfo=timezone(timedelta(0))),  # PostgreSQL's zero offset, not timezone.utc
    datetime(2020, 1, 2, 5, 4, 5, 500000, tzinfo=timezone(timedelta(hours=2))),
])
def test_record_json_is_byte_for_byte_the_compact_json_of_its_view(correlation_id, received, created_at):
    """The table's values and GET bodies keep the bytes they had before msgspec encoded them."""
    record = TimestampRecord(
        id=uuid.uuid4(), event_timestamp=parse_rfc3339("2009-09-28T19:03:12.5+02:00"),
        received_at=utc_now() if received else None, processed_at=utc_now(), correlation_id=correlation_id,
        source=SourcePosition("timestamp.command.v1", 3, 12345), created_at=created_at,
    )
    assert record.as_json() == json.dumps(record.as_view(), separators=(",", ":")).encode()


def test_the_key_of_a_command_id_is_its_canonical_text():
    ids = [uuid.uuid4() for _ in range(2_000)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    assert [key_of(i) for i in ids] == [str(i).encode() for i in ids]


def test_a_command_id_text_becomes_what_str_of_its_uuid_gives():
    ids = [uuid.uuid4() for _ in range(500)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    for command_id in ids:
        canonical = str(command_id)
        for text in (canonical, canonical.upper(), command_id.hex, f"{{{canonical}}}", command_id.urn):
            assert canonical_id(text) == canonical


@pytest.mark.parametrize("text", ["", "not-a-uuid", "52f2665d-c087-42e5-a571-89061021a37",
                                  "52f2665d-c087-42e5-a571-89061021a37cd", "52f2665d-c087-42e5-a571-89061021a37g"])
def test_text_that_is_not_a_uuid_is_refused(text):
    with pytest.raises(ValueError):
        canonical_id(text)
