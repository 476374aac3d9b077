"""Command messages on the command topic: encoding and validation (pure functions).

The wire format is the seed's JSON `{"command_id": uuid, "event_timestamp": rfc3339}`;
this service adds `received_at`. Unknown fields are ignored, so other producers'
messages in the seed's format are accepted whatever their key.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import msgspec

from app.domain.rfc3339 import InvalidTimestamp, format_rfc3339, parse_rfc3339


@dataclass(frozen=True)
class TimestampCommand:
    """A validated command from the command topic."""

    command_id: uuid.UUID
    event_timestamp: datetime  # aware, UTC
    received_at: datetime | None = None  # absent in messages of other producers
    correlation_id: str | None = None


class InvalidCommand(ValueError):
    """A message that can never be processed; the text says why."""


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what the decoder reads, so no value can exhaust memory or the stack."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32


# A JSON string, escapes included: brackets inside strings do not nest.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")


def _nests_deeper_than(value: bytes, max_depth: int) -> bool:
    """Whether the JSON text opens more than `max_depth` arrays/objects inside each other."""
    if value.count(b"[") + value.count(b"{") <= max_depth:
        return False  # the common case, at C speed
    depth = 0
    for byte in _JSON_STRING.sub(b"", value):
        if byte in _OPEN:
            depth += 1
            if depth > max_depth:
                return True
        elif byte in _CLOSE:
            depth -= 1
    return False


_UTF8_BOM = b"\xef\xbb\xbf"


def _utf8_text(value: bytes) -> str:
    """The value as text: JSON between systems is UTF-8 (RFC 8259, section 8.1).

    json.loads on bytes would also take UTF-16 and UTF-32, which the depth
    check (a byte pattern) cannot read, so the value is decoded here, strictly.
    A UTF-8 byte order mark is ignored (the RFC allows that); UTF-16 and UTF-32,
    with a mark or without one (then NUL bytes), are refused.
    """
    if value.startswith(_UTF8_BOM):
        value = value[len(_UTF8_BOM):]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCommand("message value is not UTF-8 (JSON between systems must be, RFC 8259)") from None
    if "\x00" in text:
        raise InvalidCommand("message value is not UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?)")
    return text


def encode_command(command_id: uuid.UUID, event_timestamp: str, received_at: datetime) -> bytes:
    """The message value published for an accepted HTTP command (compact JSON, in C)."""
    return msgspec.json.encode({
        "command_id": str(command_id),
        "event_timestamp": event_timestamp,
        "received_at": format_rfc3339(received_at),
    })


class _WireCommand(msgspec.Struct):
    """The fields of a command as msgspec decodes them (unknown fields are skipped)."""

    command_id: uuid.UUID
    event_timestamp: str
    received_at: str | None = None


_decode_wire = msgspec.json.Decoder(_WireCommand).decode


def decode_command(value: bytes | None, correlation_id: str | None = None,
                   limits: DecodeLimits = DecodeLimits()) -> TimestampCommand:
    """Validate one message value into a command, or raise InvalidCommand.

    Every failure to decode is InvalidCommand: size and nesting are checked before
    any JSON parser runs (json.loads recurses once per level).

    A value within the size limit, with no more brackets than the depth limit
    (so it cannot nest deeper), is first decoded and typed in one C pass
    (msgspec: strict UTF-8, strict JSON, a string field a string, a UUID a UUID).
    Whatever that pass refuses takes the checked path below, which decides the
    same way it always did and says why: the fast pass only ever accepts what
    the checked path accepts too (tests/unit/test_commands.py compares them).
    """
    if value is None:
        raise InvalidCommand("message has no value")
    if len(value) > limits.max_bytes:
        raise InvalidCommand(f"message value is {len(value)} bytes, more than the {limits.max_bytes} allowed")
    if value.count(b"[") + value.count(b"{") <= limits.max_depth:
        try:
            wire = _decode_wire(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass  # the checked path below says why
        else:
            try:
                return TimestampCommand(
                    wire.command_id,
                    parse_rfc3339(wire.event_timestamp),
                    parse_rfc3339(wire.received_at) if wire.received_at is not None else None,
                    correlation_id,
                )
            except InvalidTimestamp:
                pass  # the checked path below names the field
    return _decode_checked(value, correlation_id, limits)


def _decode_checked(value: bytes, correlation_id: str | None, limits: DecodeLimits) -> TimestampCommand:
    """decode_command's path for what the C pass refused: each check in turn, its own message."""
    text = _utf8_text(value)
    if _nests_deeper_than(value, limits.max_depth):
        raise InvalidCommand(f"message value nests deeper than {limits.max_depth} levels")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError, MemoryError):
        raise InvalidCommand("message value is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidCommand("message value is not a JSON object")
    command_id = _uuid_field(body, "command_id")
    event_timestamp = _timestamp_field(body, "event_timestamp")
    received_at = _timestamp_field(body, "received_at") if body.get("received_at") is not None else None
    return TimestampCommand(command_id, event_timestamp, received_at, correlation_id)


def _uuid_field(body: dict, name: str) -> uuid.UUID:
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidCommand(f"'{name}' is missing or not a string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidCommand(f"'{name}' is not a UUID") from None


def _timestamp_field(body: dict, name: str) -> datetime:
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidCommand(f"'{name}' is missing or not a string")
    try:
        return parse_rfc3339(value)
    except InvalidTimestamp as exc:
        raise InvalidCommand(f"'{name}': {exc}") from None
