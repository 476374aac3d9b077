"""Correlation ids: `<SVC>:<uuid>` (e.g. `ING:...`) or a bare UUID, at most 100 characters.

The id of the request or event at hand is a context variable, so that every
log line written while handling it carries it (`app.observability.logs`).
"""

from __future__ import annotations

import contextvars
import random
import re

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


# A version 4 UUID's fixed bits: the version nibble (4) and the RFC 4122 variant (10).
_UUID4_FIXED_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_FIXED_SET = (0x4000 << 64) | (0x8000 << 48)


def new_correlation_id(service: str = "ING") -> str:
    """`<service>:<random version 4 UUID>`.

    The bits come from `random`, not `os.urandom` as `uuid.uuid4()`'s do: a
    correlation id only has to be unique, not secret, and this is made for every
    request without one (1.8 µs against uuid4's 7 here). Ids made this way are
    predictable from earlier ones, so none may ever carry authority. `random`
    reseeds itself in a forked child, so processes do not share a sequence.
    """
    digits = f"{random.getrandbits(128) & _UUID4_FIXED_CLEAR | _UUID4_FIXED_SET:032x}"
    return f"{service}:{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


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


class log_context:
    """Within the block, log lines carry this correlation id (and event id).

    A class rather than a generator-based context manager: every request enters one,
    and this costs a third of what `contextlib.contextmanager` does. Single use: enter
    each instance once.
    """

    __slots__ = ("correlation", "event", "tokens")

    def __init__(self, correlation: str | None, event: str | None = None) -> None:
        self.correlation, self.event = correlation, event

    def __enter__(self) -> None:
        self.tokens = (correlation_id.set(self.correlation), event_id.set(self.event))

    def __exit__(self, *exc_info: object) -> None:
        correlation_id.reset(self.tokens[0])
        event_id.reset(self.tokens[1])
