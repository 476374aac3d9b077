"""Correlation ids: `<SVC>:<uuid>` (e.g. `ING:...`) or a bare UUID, at most 100 characters.

The id of the request or event at hand is a context variable, so that every
log line written while handling it carries it (`app.observability.logs`).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import uuid
from typing import Iterator

MAX_LENGTH = 100
HTTP_HEADERS = ("X-Correlation-ID", "correlationId", "X-Request-ID")
KAFKA_HEADERS = ("correlation_id", "correlationId")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CORRELATION_ID = re.compile(rf"(?:[A-Za-z][A-Za-z0-9_-]{{0,15}}:)?{_UUID}")


class InvalidCorrelationId(ValueError):
    """The value is not an accepted correlation id."""


def validate_correlation_id(value: str) -> str:
    """Return the value when it is an accepted correlation id, else raise."""
    if len(value) > MAX_LENGTH or not _CORRELATION_ID.fullmatch(value):
        raise InvalidCorrelationId(
            "correlation id must be '<SVC>:<uuid>' (e.g. ING:<uuid>) or a UUID, "
            f"at most {MAX_LENGTH} characters"
        )
    return value


def new_correlation_id(service: str = "ING") -> str:
    return f"{service}:{uuid.uuid4()}"


def from_kafka_headers(headers: object) -> str | None:
    """The correlation id carried by a message, or None when absent or malformed."""
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    for name, raw in pairs:
        if name in KAFKA_HEADERS and raw:
            try:
                text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                return validate_correlation_id(text)
            except (UnicodeDecodeError, InvalidCorrelationId):
                return None
    return None


correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)


@contextlib.contextmanager
def log_context(correlation: str | None, event: str | None = None) -> Iterator[None]:
    """Within the block, log lines carry this correlation id (and event id)."""
    tokens = (correlation_id.set(correlation), event_id.set(event))
    try:
        yield
    finally:
        correlation_id.reset(tokens[0])
        event_id.reset(tokens[1])
