"""From consumed messages to rows (pure functions, unit-tested without Kafka)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable

import msgspec

from app.domain.commands import DecodeLimits, InvalidCommand, TimestampCommand, decode_command
from app.domain.correlation import from_kafka_headers
from app.domain.kafka_headers import UNDECODABLE_RECORD, undecodable_header_names
from app.domain.records import ProcessedEvent, SourcePosition, Status, TimestampRecord


class ConsumedMessage(msgspec.Struct, frozen=True):
    """The parts of a Kafka message the pipeline needs."""

    source: SourcePosition
    value: bytes | None
    headers: object = ()
    key: bytes | None = None


def enrich(command: TimestampCommand, source: SourcePosition, processed_at: datetime) -> TimestampRecord:
    """Add processing time and Kafka provenance to a validated command."""
    return TimestampRecord(
        id=command.command_id,
        event_timestamp=command.event_timestamp,
        received_at=command.received_at,
        processed_at=processed_at,
        correlation_id=command.correlation_id,
        source=source,
    )


Enrich = Callable[[TimestampCommand, SourcePosition, datetime], TimestampRecord]


@dataclass
class BatchPlan:
    """What one batch will write: records to insert, and the messages skipped."""

    records: list[TimestampRecord] = field(default_factory=list)
    skipped: list[ProcessedEvent] = field(default_factory=list)  # invalid, failed, or repeated in the batch

    def processed_events(self, inserted_ids: set) -> list[ProcessedEvent]:
        """One row per message: persisted when its insert took, duplicate when the id existed."""
        rows = [
            ProcessedEvent(
                source=record.source,
                event_id=record.id,
                correlation_id=record.correlation_id,
                status=Status.PERSISTED if record.id in inserted_ids else Status.DUPLICATE,
                processed_at=record.processed_at,
            )
            for record in self.records
        ]
        return rows + self.skipped


def plan_batch(messages: Iterable[ConsumedMessage], processed_at: datetime,
               limits: DecodeLimits = DecodeLimits(), enrich: Enrich = enrich) -> BatchPlan:
    """Validate and enrich a batch of messages.

    Within a batch the first message of a command id wins, so the insert sees each
    id once and later messages with that id are recorded as duplicates; a message
    seen twice at the same position counts once.
    """
    plan = BatchPlan()
    seen = set()
    for message in unique_positions(messages):
        correlation_id = from_kafka_headers(message.headers)
        try:
            reject_undecodable(message)
            command = decode_command(message.value, correlation_id, limits)
        except InvalidCommand as exc:
            plan.skipped.append(
                ProcessedEvent(message.source, None, correlation_id, Status.INVALID, processed_at, str(exc))
            )
            continue
        record = enrich(command, message.source, processed_at)
        if record.id in seen:
            plan.skipped.append(
                ProcessedEvent(message.source, record.id, correlation_id, Status.DUPLICATE, processed_at)
            )
            continue
        seen.add(record.id)
        plan.records.append(record)
    return plan


def reject_undecodable(message: ConsumedMessage) -> None:
    """Raise InvalidCommand for a record with a header name that is not UTF-8.

    Such a record is not one any Kafka client of ours could have written: it is
    dead-lettered whole (docs/design.md, "Records the client cannot decode"),
    even when its value is a valid command.
    """
    names = undecodable_header_names(message.headers)
    if names:
        listed = ", ".join(repr(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")
        what = "header name {} is" if len(names) == 1 else "header names {} are"
        raise InvalidCommand(f"{UNDECODABLE_RECORD}: {what.format(listed)} not UTF-8")


def unique_positions(messages: Iterable[ConsumedMessage]) -> list[ConsumedMessage]:
    """The messages in order, each position once (a re-read can fetch a message twice)."""
    seen = set()
    unique = []
    for message in messages:
        if message.source not in seen:
            seen.add(message.source)
            unique.append(message)
    return unique


def failed_event(message: ConsumedMessage, error: BaseException, processed_at: datetime,
                 limits: DecodeLimits = DecodeLimits()) -> ProcessedEvent:
    """The `failed` row of a message whose processing raised: what is known of it, and the error."""
    correlation_id = from_kafka_headers(message.headers)
    try:
        event_id = decode_command(message.value, correlation_id, limits).command_id
    except InvalidCommand:
        event_id = None
    return ProcessedEvent(message.source, event_id, correlation_id, Status.FAILED, processed_at, describe_error(error))


def describe_error(error: BaseException, limit: int = 500) -> str:
    """`Type: message`, one line, bounded, without NUL (PostgreSQL text refuses it)."""
    text = f"{type(error).__name__}: {error}".replace("\x00", "\\0")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
