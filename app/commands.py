"""Command messages on the command topic: encoding and validation (pure functions).

The wire format is the seed's JSON `{"command_id": uuid, "event_timestamp": rfc3339}`;
this service adds `received_at`. Unknown fields are ignored, so other producers'
messages in the seed's format are accepted whatever their key.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from app.records import TimestampCommand
from app.timestamps import InvalidTimestamp, format_rfc3339, parse_rfc3339


class InvalidCommand(ValueError):
    """A message that can never be processed; the text says why."""


def encode_command(command_id: uuid.UUID, event_timestamp: str, received_at: datetime) -> bytes:
    """The message value published for an accepted HTTP command."""
    return json.dumps(
        {
            "command_id": str(command_id),
            "event_timestamp": event_timestamp,
            "received_at": format_rfc3339(received_at),
        },
        separators=(",", ":"),
    ).encode()


def decode_command(value: bytes | None, correlation_id: str | None = None) -> TimestampCommand:
    """Validate one message value into a command, or raise InvalidCommand."""
    if value is None:
        raise InvalidCommand("message has no value")
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, ValueError):
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
