import json
import uuid
from datetime import datetime, timezone

import pytest

from app.domain.commands import InvalidCommand, decode_command, encode_command

UTC = timezone.utc
COMMAND_ID = uuid.UUID("add1f52d-7c56-4c9f-b319-1a266c355f6b")


def test_encoded_command_decodes_to_the_same_command():
    received_at = datetime(2020, 8, 31, 15, 4, 5, 123000, tzinfo=UTC)
    value = encode_command(COMMAND_ID, "2006-01-02T17:04:05+02:00", received_at)
    command = decode_command(value, "ING:" + str(COMMAND_ID))
    assert command.command_id == COMMAND_ID
    assert command.event_timestamp == datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC)
    assert command.received_at == received_at
    assert command.correlation_id == "ING:" + str(COMMAND_ID)


def test_encoded_command_keeps_the_seed_wire_format():
    body = json.loads(encode_command(COMMAND_ID, "2006-01-02T15:04:05Z", datetime.now(UTC)))
    assert body["command_id"] == str(COMMAND_ID)
    assert body["event_timestamp"] == "2006-01-02T15:04:05Z"


def test_seed_format_from_other_producers_is_accepted_and_unknown_fields_ignored():
    value = b'{"command_id":"add1f52d-7c56-4c9f-b319-1a266c355f6b", "event_timestamp":"2006-01-02T15:04:05Z", "x": [1]}'
    command = decode_command(value)
    assert command.command_id == COMMAND_ID
    assert command.received_at is None
    assert command.correlation_id is None


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "no value"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"event_timestamp": "2006-01-02T15:04:05Z"}', "'command_id' is missing"),
        (b'{"command_id": 12, "event_timestamp": "2006-01-02T15:04:05Z"}', "'command_id' is missing or not a string"),
        (b'{"command_id": "nope", "event_timestamp": "2006-01-02T15:04:05Z"}', "'command_id' is not a UUID"),
        (b'{"command_id": "add1f52d-7c56-4c9f-b319-1a266c355f6b"}', "'event_timestamp' is missing"),
        (b'{"command_id": "add1f52d-7c56-4c9f-b319-1a266c355f6b", "event_timestamp": "yesterday"}', "'event_timestamp': not an RFC 3339"),
        (b'{"command_id": "add1f52d-7c56-4c9f-b319-1a266c355f6b", "event_timestamp": "2006-01-02T15:04:05Z", "received_at": "soon"}', "'received_at'"),
    ],
)
def test_invalid_messages_are_rejected_with_a_reason(value, reason):
    with pytest.raises(InvalidCommand, match=reason):
        decode_command(value)


@pytest.mark.parametrize("value, max_bytes, reason", [
    (b"[" * 5000 + b"]" * 5000, 1 << 20, "nests deeper than 32 levels"),  # json.loads: RecursionError
    (b'{"a":' * 40 + b"1" + b"}" * 40, 1 << 20, "nests deeper than 32 levels"),
    (b'{"command_id": "' + b"x" * 2000 + b'"}', 1000, "2018 bytes, more than the 1000 allowed"),
])
def test_decoding_is_bounded(value, max_bytes, reason):
    from app.domain.commands import DecodeLimits

    with pytest.raises(InvalidCommand, match=reason):
        decode_command(value, limits=DecodeLimits(max_bytes=max_bytes, max_depth=32))


def test_brackets_inside_strings_do_not_count_as_nesting():
    value = json.dumps({"command_id": str(COMMAND_ID), "event_timestamp": "2006-01-02T15:04:05Z",
                        "note": "[" * 100 + '\\"{' * 50}).encode()
    assert decode_command(value).command_id == COMMAND_ID


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("text", [
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"}',
    "[" * 200 + "]" * 200,  # nested past MAX_JSON_DEPTH: the depth check cannot be bypassed either
])
def test_json_in_utf16_or_utf32_is_invalid_with_or_without_a_byte_order_mark(encoding, text):
    for value in (text.encode(encoding), ("\ufeff" + text).encode(encoding)):
        with pytest.raises(InvalidCommand, match="not UTF-8"):
            decode_command(value)


def test_a_utf8_byte_order_mark_is_ignored():
    value = b"\xef\xbb\xbf" + b'{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"}'
    assert str(decode_command(value).command_id) == "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10"
