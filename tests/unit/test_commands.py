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
    # Compact, in this key order: the bytes every earlier version published.
    assert encode_command(COMMAND_ID, "2006-01-02T15:04:05Z", datetime(2020, 8, 31, 15, 4, 5, 123000, tzinfo=UTC)) == (
        b'{"command_id":"add1f52d-7c56-4c9f-b319-1a266c355f6b","event_timestamp":"2006-01-02T15:04:05Z",'
        b'"received_at":"2020-08-31T15:04:05.123000Z"}')


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


NOT_UTF8 = "message value is not UTF-8 (JSON between systems must be, RFC 8259)"
NUL_BYTES = "message value is not UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?)"
FLAT = '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"}'
NESTED = "[" * 200 + "]" * 200  # past MAX_JSON_DEPTH, which a byte scan for UTF-8 brackets did not see in UTF-16


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("text", [FLAT, NESTED], ids=["flat", "nested"])
@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
def test_json_in_utf16_or_utf32_is_invalid_with_or_without_a_byte_order_mark(encoding, text, bom):
    """json.loads(bytes) would read every one of these (it detects the encoding); RFC 8259 wants UTF-8."""
    value = (("\ufeff" if bom else "") + text).encode(encoding)
    # A byte order mark is never UTF-8; without one, ASCII in UTF-16/32 is UTF-8 with NUL bytes in between.
    expected = NOT_UTF8 if bom else NUL_BYTES
    with pytest.raises(InvalidCommand) as raised:
        decode_command(value)
    assert str(raised.value) == expected


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])  # Python's: a byte order mark, native order
@pytest.mark.parametrize("text", [FLAT, NESTED], ids=["flat", "nested"])
def test_json_in_utf16_or_utf32_as_python_writes_it_is_invalid(encoding, text):
    with pytest.raises(InvalidCommand) as raised:
        decode_command(text.encode(encoding))
    assert str(raised.value) == NOT_UTF8


@pytest.mark.parametrize("value", [
    b'{"a": "\xc0\xaf"}',  # an overlong "/"
    b'{"a": "\xed\xa0\x80"}',  # a surrogate in UTF-8 form (CESU-8)
    b'{"a": "\xe2\x82"}',  # a sequence cut short
    b'{"a": "caf\xe9"}',  # Latin-1
])
def test_bytes_that_are_not_strict_utf8_are_invalid(value):
    with pytest.raises(InvalidCommand, match="not UTF-8"):
        decode_command(value)


def test_utf16_without_nul_bytes_is_not_json():
    """Non-ASCII UTF-16 may be valid UTF-8 without NUL, but it is then other text, never a command's JSON."""
    value = "\u4e2d\u5b7b".encode("utf-16-le")  # -N{[: UTF-8 without a NUL
    assert value.decode("utf-8") == "-N{["
    with pytest.raises(InvalidCommand, match="message value is not JSON"):
        decode_command(value)


def test_a_utf8_byte_order_mark_is_ignored():
    value = b"\xef\xbb\xbf" + FLAT.encode()
    assert str(decode_command(value).command_id) == "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10"


@pytest.mark.parametrize("value, reason", [
    (b"\xef\xbb\xbf" + NESTED.encode(), "nests deeper than 32 levels"),
    (b"\xef\xbb\xbf" + b"\xef\xbb\xbf" + FLAT.encode(), "not JSON"),  # one mark is ignored, not two
    (b"\xef\xbb\xbf", "not JSON"),
    (b"\xef\xbb\xbf" + b" " * 997 + FLAT.encode(), f"{1000 + len(FLAT)} bytes, more than the 1000 allowed"),
])
def test_a_utf8_byte_order_mark_hides_nothing_from_the_checks(value, reason):
    from app.domain.commands import DecodeLimits

    with pytest.raises(InvalidCommand, match=reason):
        decode_command(value, limits=DecodeLimits(max_bytes=1000, max_depth=32))


def test_the_size_limit_counts_bytes_whatever_the_encoding():
    from app.domain.commands import DecodeLimits

    value = FLAT.encode("utf-32-le")  # 4 bytes per character
    with pytest.raises(InvalidCommand, match=f"{len(value)} bytes, more than the 200 allowed"):
        decode_command(value, limits=DecodeLimits(max_bytes=200, max_depth=32))


@pytest.mark.parametrize("fraction, microsecond", [("1", 100000), ("123456", 123456), ("1234567", 123456),
                                                   ("999999999", 999999)])
def test_kafka_commands_take_fractions_of_up_to_9_digits_truncated_to_microseconds(fraction, microsecond):
    """As on HTTP (app/domain/rfc3339.py): truncated, never rounded."""
    value = json.dumps({"command_id": str(COMMAND_ID), "event_timestamp": f"2020-01-01T00:00:00.{fraction}Z"})
    assert decode_command(value.encode()).event_timestamp == datetime(2020, 1, 1, 0, 0, 0, microsecond, tzinfo=UTC)


@pytest.mark.parametrize("digits", [10, 20, 5000])
def test_kafka_commands_with_a_fraction_of_10_digits_or_more_are_invalid(digits):
    value = json.dumps({"command_id": str(COMMAND_ID), "event_timestamp": f"2020-01-01T00:00:00.{'1' * digits}Z"})
    with pytest.raises(InvalidCommand) as raised:
        decode_command(value.encode())
    assert str(raised.value) == (f"'event_timestamp': the fraction of a second has {digits} digits; "
                                 "at most 9 (nanoseconds) are accepted")


def _decision(decode, value):
    try:
        return decode(value)
    except InvalidCommand as exc:
        return str(exc)


COMMAND_VARIANTS = [
    FLAT,
    '{"command_id": "3F1C0E4E-0B5E-4C47-9A43-7C1F4F2B8F10", "event_timestamp": "2020-01-01T00:00:00Z"}',
    '{"command_id": "3f1c0e4e0b5e4c479a437c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"}',
    '{"command_id": "{3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10}", "event_timestamp": "2020-01-01T00:00:00Z"}',
    '{"command_id": "urn:uuid:3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f1", "event_timestamp": "2020-01-01T00:00:00Z"}',
    '{"command_id": "a", "command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z", "received_at": null}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z", "received_at": 1}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-02-30T00:00:00Z"}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00.5+01:00",'
    ' "received_at": "2020-01-01T00:00:01.123456789Z", "x": [1, {"y": null}], "n": NaN, "s": "\\ud800\\u0000"}',
    ' \r\n\t{"event_timestamp": "2020-01-01T00:00:00Z", "command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10"} \n',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00\\u005a"}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": null}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z",}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z"} x',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z", "x": "\x01"}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z", "x": "é"}',
    '{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z", "x": 1e999}',
]


@pytest.mark.parametrize("text", COMMAND_VARIANTS)
@pytest.mark.parametrize("limits", [(1 << 20, 32), (1 << 20, 1), (120, 32)])
def test_the_c_pass_decides_exactly_as_the_checked_path(text, limits):
    """decode_command decodes in one msgspec pass first; what it returns must be what the checked path returns."""
    from app.domain.commands import DecodeLimits, _decode_checked

    bounds = DecodeLimits(max_bytes=limits[0], max_depth=limits[1])
    value = text.encode()
    fast = _decision(lambda v: decode_command(v, "c", bounds), value)
    checked = _decision(lambda v: _decode_checked(v, "c", bounds) if len(v) <= bounds.max_bytes
                        else decode_command(v, "c", bounds), value)
    assert fast == checked


def test_an_unknown_field_with_a_huge_integer_is_ignored_like_any_other():
    """json.loads refused integers past 4,300 digits (Python's limit); the C pass reads valid JSON as JSON."""
    value = ('{"command_id": "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10", "event_timestamp": "2020-01-01T00:00:00Z",'
             ' "n": ' + "1" * 5000 + "}").encode()
    assert str(decode_command(value).command_id) == "3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10"
