"""The records that flow through the pipeline."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum

import msgspec

from app.domain.rfc3339 import format_rfc3339, in_utc


# The records are msgspec Structs rather than frozen dataclasses: immutable and
# hashable just the same, and built in C, several per consumed message.
class SourcePosition(msgspec.Struct, frozen=True):
    """Where in Kafka an event was read."""

    topic: str
    partition: int
    offset: int


class TimestampRecord(msgspec.Struct, frozen=True):
    """An enriched command: one row of `timestamp_records`."""

    id: uuid.UUID
    event_timestamp: datetime
    received_at: datetime | None
    processed_at: datetime
    correlation_id: str | None
    source: SourcePosition
    created_at: datetime | None = None  # set by PostgreSQL on insert

    def as_view(self) -> dict[str, str]:
        """The flat all-strings JSON object served by GET /api/v1/timestamp/{id}."""
        view = {
            "id": str(self.id),
            "command_id": str(self.id),
            "event_timestamp": format_rfc3339(self.event_timestamp),
            "created_at": format_rfc3339(self.created_at or self.processed_at),
            "received_at": format_rfc3339(self.received_at) if self.received_at else None,
            "processed_at": format_rfc3339(self.processed_at),
            "correlation_id": self.correlation_id,
            "source_topic": self.source.topic,
            "source_partition": str(self.source.partition),
            "source_offset": str(self.source.offset),
        }
        return {key: value for key, value in view.items() if value is not None}

    def as_json(self, created_at: datetime | None = None) -> bytes:
        """`as_view` encoded (`created_at` given when the insert just returned it): the query table's value.

        Encoded by msgspec in C: the same bytes as json.dumps(as_view(), separators=(",", ":"))
        for every value this service stores (correlation ids and topic names are ASCII;
        tests/unit/test_enrichment.py compares them).
        """
        return _encode_view(_View(
            id=self.id, command_id=self.id, event_timestamp=in_utc(self.event_timestamp),
            created_at=in_utc(created_at or self.created_at or self.processed_at),
            received_at=in_utc(self.received_at) if self.received_at else None,
            processed_at=in_utc(self.processed_at), correlation_id=self.correlation_id,
            source_topic=self.source.topic, source_partition=str(self.source.partition),
            source_offset=str(self.source.offset),
        ))


class _View(msgspec.Struct, kw_only=True, omit_defaults=True):
    """TimestampRecord.as_view's fields in its order, for msgspec; absent ones (None) are left out."""

    id: uuid.UUID
    command_id: uuid.UUID
    event_timestamp: datetime
    created_at: datetime
    received_at: datetime | None = None
    processed_at: datetime
    correlation_id: str | None = None
    source_topic: str
    source_partition: str
    source_offset: str


_encode_view = msgspec.json.Encoder().encode


def key_of(command_id: uuid.UUID) -> bytes:
    """A command id as a Kafka and query-table key: its canonical text (what str() gives) in UTF-8.

    msgspec writes it in C (a UUID's JSON string, without the quotes); str() is
    Python, and this runs for every record.
    """
    return _encode_view(command_id)[1:-1]


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(text: str) -> str:
    """A command id given as text, in canonical form (what str() of its UUID gives); ValueError if not a UUID.

    An id already canonical, as every id this service hands out is, is returned as
    it is after one pattern match (0.3 µs against 2.5 for parsing and formatting it).
    """
    return text if _CANONICAL_UUID.fullmatch(text) else str(uuid.UUID(text))


class Status(StrEnum):
    """The fate of one Kafka message: `processed_events.status` (its CHECK constraint
    lists the same values; `tests.unit.test_status` keeps them in step) and the
    `outcome` label of `timestamp_events_processed_total`."""

    PERSISTED = "persisted"  # its record was inserted
    DUPLICATE = "duplicate"  # its command id was already stored, or earlier in the batch
    INVALID = "invalid"  # it can never be processed (dead-lettered)
    FAILED = "failed"  # processing it raised (dead-lettered)


class ProcessedEvent(msgspec.Struct, frozen=True):
    """One row of `processed_events`: the fate of one Kafka message."""

    source: SourcePosition
    event_id: uuid.UUID | None
    correlation_id: str | None
    status: Status
    processed_at: datetime
    error: str | None = None

    def as_view(self) -> dict[str, str]:
        """One row of GET /api/v1/events, flat strings."""
        view = {
            "topic": self.source.topic,
            "partition": str(self.source.partition),
            "offset": str(self.source.offset),
            "event_id": str(self.event_id) if self.event_id else None,
            "correlation_id": self.correlation_id,
            "status": self.status,
            "error": self.error,
            "processed_at": format_rfc3339(self.processed_at),
        }
        return {key: value for key, value in view.items() if value is not None}
