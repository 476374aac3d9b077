"""The write policy of a batch of command messages, in one place.

plan (validate, enrich) -> dead-letter the invalid -> write PostgreSQL -> update
the query table. The caller acknowledges the batch only after `write` returned.

- Transient infrastructure failures (PostgreSQL or Kafka unreachable) are
  retried where they happen, with back-off: nothing is consumed meanwhile.
  PostgreSQL writes go through the circuit breaker: while it is open none is
  tried, and while it is half-open and nothing is written, `try_half_open_breaker`
  pings as its trial (AckAfterWrite calls it once a second).
- Any other exception is treated as the fault of some message in the batch:
  the batch is split in halves until the failing messages are alone; those are
  dead-lettered with `dlq.reason=processing_error` and recorded as `failed`, and
  the rest is written. Writes are idempotent, so re-writing a half that had
  partly succeeded changes nothing.
- Nothing escapes `write` but cancellation: an exception that escaped a Faust
  agent would let Faust commit offsets past the batch (docs/design.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from tenacity import AsyncRetrying, retry_if_exception, retry_if_exception_type, wait_exponential

from app.adapters.database import Database, is_transient
from app.domain.batch_plan import BatchPlan, ConsumedMessage, failed_event, plan_batch, unique_positions
from app.domain.commands import DecodeLimits
from app.domain.correlation import log_context
from app.domain.dead_letters import DeadLetter, dead_letter
from app.domain.records import Status, TimestampRecord
from app.domain.rfc3339 import utc_now
from app.observability import metrics
from app.observability.tracing import database_write_span, start_processing_spans
from app.sink.circuit_breaker import CircuitBreaker
from app.sink.circuit_breaker import State as BreakerState

log = logging.getLogger(__name__)

SendDeadLetters = Callable[[Sequence[DeadLetter]], Awaitable[None]]
UpdateTable = Callable[[list[TimestampRecord], dict], Awaitable[None]]
PlanBatch = Callable[..., BatchPlan]  # app.domain.batch_plan.plan_batch's signature


@dataclass
class BatchOutcome:
    """What one batch came to: rows inserted, and messages invalid or failed."""

    inserted: int = 0
    invalid: int = 0
    failed: int = 0


async def no_table(records: list[TimestampRecord], inserted: dict) -> None:
    """For writers without a query table (replay)."""


async def no_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """For writers whose dead letters were sent already (a full replay)."""


KAFKA_DENIALS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError,
                 TransactionalIdAuthorizationFailed)


def is_kafka_outage(exc: BaseException) -> bool:
    """The broker is unreachable or busy, or denies this worker an ACL (retry: no message's fault), as
    opposed to refusing this message (e.g. too large)."""
    if isinstance(exc, (KafkaTimeoutError, asyncio.TimeoutError, ConnectionError, *KAFKA_DENIALS)):
        return True
    return isinstance(exc, KafkaError) and exc.retriable


def is_local_io(exc: BaseException) -> bool:
    """A local I/O failure (an OSError: the table store's disk is full, say): no message's fault, retry."""
    return isinstance(exc, OSError)


class BatchWriter:
    """Writes batches of command messages; see the module docstring for the policy."""

    def __init__(self, *, database: Database, send_dead_letters: SendDeadLetters, update_table: UpdateTable,
                 topic: str, limits: DecodeLimits = DecodeLimits(), retry_max_seconds: float = 30.0,
                 breaker: CircuitBreaker | None = None, dead_letter_topic: str = "the dead-letter topic",
                 plan: PlanBatch = plan_batch) -> None:
        self.database = database
        self.dead_letter_topic = dead_letter_topic
        self.breaker = breaker or CircuitBreaker()
        self._send_dead_letters = send_dead_letters
        self._update_table = update_table
        self.topic = topic
        self.limits = limits
        self.retry_max_seconds = retry_max_seconds
        self._plan = plan

    async def write(self, messages: Sequence[ConsumedMessage]) -> BatchOutcome:
        """Process and persist every message; returns when the batch may be acknowledged.

        A failure that isolation cannot place on a message (the `failed` row
        itself cannot be written, say) is retried with back-off, holding the batch.
        """
        messages = unique_positions(messages)
        spans = start_processing_spans(self.topic, [m.headers for m in messages])
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Exception),
                wait=wait_exponential(multiplier=0.5, max=self.retry_max_seconds),
                before_sleep=_log_unplaced_failure,
            ):
                with attempt:
                    outcome = BatchOutcome()  # counts of this attempt only
                    await self._write_isolating(messages, spans, outcome)
        finally:
            for span in spans:
                span.end()
        metrics.batch_size.observe(len(messages))
        return outcome

    async def _write_isolating(self, messages: list[ConsumedMessage], spans, outcome: BatchOutcome) -> None:
        try:
            await self._write_once(messages, spans, outcome)
        except Exception as exc:
            if len(messages) == 1:
                await self._fail(messages[0], exc)
                outcome.failed += 1
                return
            metrics.batch_splits.inc()
            log.warning("A batch of %d messages failed (%s: %s); splitting it to find the failing ones",
                        len(messages), type(exc).__name__, exc)
            half = len(messages) // 2
            await self._write_isolating(messages[:half], spans[:half], outcome)
            await self._write_isolating(messages[half:], spans[half:], outcome)

    async def _write_once(self, messages: list[ConsumedMessage], spans, outcome: BatchOutcome) -> None:
        plan = self._plan(messages, processed_at=utc_now(), limits=self.limits)
        invalid = await self.dead_letter_invalid(messages, plan)
        with database_write_span(spans):
            started = time.monotonic()
            inserted = await self.persist(plan)
            metrics.db_write_duration.observe(time.monotonic() - started)
        await self._retry_outage(self._update_table, plan.records, inserted)
        _record_outcomes(plan, inserted)
        outcome.inserted += len(inserted)
        outcome.invalid += invalid

    async def _fail(self, message: ConsumedMessage, error: Exception) -> None:
        """Dead-letter a message whose processing raised, and record it as failed."""
        event = failed_event(message, error, utc_now(), self.limits)
        with log_context(event.correlation_id, str(event.event_id) if event.event_id else None):
            log.error("Processing %s[%d]@%d raised %s; dead-lettered as processing_error",
                      message.source.topic, message.source.partition, message.source.offset, event.error,
                      exc_info=error)
        await self.send_dead_letters([dead_letter(message, event, error)])
        await self.persist(BatchPlan(skipped=[event]))
        metrics.events_processed.labels(Status.FAILED).inc()

    async def persist(self, plan: BatchPlan) -> dict:
        """Write a plan's rows, retried with back-off while PostgreSQL fails transiently.

        While the circuit breaker is open no attempt is made: the batch simply
        waits, nothing consumed or acknowledged, until the half-open trial.
        Returns created_at of the ids inserted.
        """
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.1, max=self.retry_max_seconds),
            before_sleep=_log_database_retry,
            reraise=True,
        ):
            with attempt:
                await self._wait_for_breaker()
                try:
                    inserted = await self.database.persist_batch(plan)
                except Exception as exc:
                    if is_transient(exc):
                        self.breaker.record_failure()
                    raise
                self.breaker.record_success()
                return inserted
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait_for_breaker(self) -> None:
        delay = self.breaker.seconds_until_trial()
        if delay:
            log.warning("PostgreSQL circuit breaker is open; next trial in %.0f s", delay)
        while (delay := self.breaker.seconds_until_trial()) > 0:
            await asyncio.sleep(min(delay, 1.0))

    async def try_half_open_breaker(self) -> None:
        """A ping as the half-open breaker's trial, so that it closes (or opens again) without traffic.

        Writes are the usual trials; with nothing to write, a breaker would stay
        half-open until the next batch came.
        """
        if self.breaker.state is not BreakerState.HALF_OPEN:
            return
        try:
            await self.database.ping()
        except Exception as exc:
            if is_transient(exc):
                self.breaker.record_failure()
            return
        self.breaker.record_success()

    async def dead_letter_invalid(self, messages: Sequence[ConsumedMessage], plan: BatchPlan) -> int:
        """Log the plan's skipped messages and dead-letter the invalid ones; returns how many were invalid."""
        _log_skipped(plan)
        by_position = {m.source: m for m in messages}
        invalid = [e for e in plan.skipped if e.status == Status.INVALID]
        await self.send_dead_letters([dead_letter(by_position[e.source], e) for e in invalid])
        return len(invalid)

    async def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Send and wait for the broker, retrying while Kafka is unreachable.

        A letter the broker refuses (too large, say) is sent without its value:
        its headers name the original position in the command topic, which keeps it.
        """
        if not letters:
            return
        try:
            await self._send_retrying(letters)
        except KafkaError:
            for letter in letters:
                try:
                    await self._send_retrying([letter])
                except KafkaError as exc:
                    log.warning("Dead letter refused by the broker (%r); sending it without its value", exc)
                    await self._send_retrying([letter.without_value(exc)])
        metrics.dead_letters.inc(len(letters))

    async def _send_retrying(self, letters: Sequence[DeadLetter]) -> None:
        await self._retry_outage(self._send_dead_letters, letters, what=f"Write on topic {self.dead_letter_topic}")

    async def _retry_outage(self, write: Callable[..., Awaitable[None]], *args,
                            what: str = "Write on the query table's changelog topic") -> None:
        """A write to Kafka (dead letters, the table's changelog), retried while the broker is unreachable.

        Also while PostgreSQL is: the table update reads the records it lacks
        from it, and an outage there is no message's fault (not to be isolated).
        And while the table's local store cannot write (a full disk: an OSError,
        `TableStoreUnwritable`): the batch is held, unacknowledged, until it can.
        """
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda exc: is_kafka_outage(exc) or is_transient(exc) or is_local_io(exc)),
            wait=wait_exponential(multiplier=0.2, max=self.retry_max_seconds),
            before_sleep=lambda state: _log_kafka_retry(state, what),
        ):
            with attempt:
                await write(*args)


def _log_skipped(plan: BatchPlan) -> None:
    for skipped in plan.skipped:
        with log_context(skipped.correlation_id, str(skipped.event_id) if skipped.event_id else None):
            log.warning("Skipped message %s[%d]@%d: %s%s", skipped.source.topic, skipped.source.partition,
                        skipped.source.offset, skipped.status, f" ({skipped.error})" if skipped.error else "")


def _record_outcomes(plan: BatchPlan, inserted: dict) -> None:
    """Metrics of a committed (sub-)batch."""
    persisted = len(inserted)
    metrics.events_processed.labels(Status.PERSISTED).inc(persisted)
    metrics.events_processed.labels(Status.DUPLICATE).inc(len(plan.records) - persisted)
    for status, count in Counter(event.status for event in plan.skipped).items():
        metrics.events_processed.labels(status).inc(count)
    now = utc_now()
    for record in plan.records:
        if record.id in inserted and record.received_at is not None:
            metrics.end_to_end_latency.observe(max(0.0, (now - record.received_at).total_seconds()))


def _log_unplaced_failure(state) -> None:
    log.error("Writing a batch failed in a way no message explains (%r); retrying it, nothing acknowledged",
              state.outcome.exception())


def _log_database_retry(state) -> None:
    metrics.db_write_failures.inc()
    log.warning("Batch write failed (attempt %d), retrying: %r", state.attempt_number, state.outcome.exception())


def _log_kafka_retry(state, what: str) -> None:
    error = state.outcome.exception()
    if isinstance(error, KAFKA_DENIALS):
        log.error("Kafka denies this worker %s (%s: %s); grant it (docs/security.md, `python -m app acls`). "
                  "Retrying (attempt %d); nothing is acknowledged past this batch",
                  what, type(error).__name__, error, state.attempt_number)
        return
    log.warning("Writing to Kafka or the table's store (or reading PostgreSQL for the table) failed (attempt %d), "
                "retrying: %r",
                state.attempt_number, state.outcome.exception())
