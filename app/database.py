"""PostgreSQL access: pool, migrations, batch writes and look-ups."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from pathlib import Path

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extras
from tenacity import AsyncRetrying, retry_if_exception, retry_if_exception_type, wait_exponential

from app import metrics
from app.circuit_breaker import CircuitBreaker
from app.circuit_breaker import State as BreakerState
from app.enrichment import BatchPlan
from app.records import ProcessedEvent, Status, TimestampRecord
from app.schema import EVENTS, RECORDS, event_of_record

log = logging.getLogger(__name__)
psycopg2.extras.register_uuid()

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# One statement, so one round trip and one implicit transaction per batch: the
# records, then a processed_events row per message (persisted or duplicate as
# the insert decided, plus the skipped ones). Column lists and the unnest()
# arrays (one parameter per column) come from app/schema.py.
_PERSIST_BATCH = f"""
    WITH batch AS (
        SELECT * FROM {RECORDS.unnest()} AS b({RECORDS.insert_list})
    ), inserted AS (
        INSERT INTO timestamp_records ({RECORDS.insert_list})
        SELECT * FROM batch
        ON CONFLICT (id) DO NOTHING
        RETURNING id, created_at
    ), logged AS (
        INSERT INTO processed_events ({EVENTS.insert_list})
        SELECT {event_of_record("b", status="CASE WHEN i.id IS NULL THEN %(duplicate)s ELSE %(persisted)s END")}
        FROM batch b LEFT JOIN inserted i USING (id)
        UNION ALL
        SELECT * FROM {EVENTS.unnest(prefix="s_")}
        ON CONFLICT (topic, partition, "offset") DO NOTHING
    )
    SELECT id, created_at FROM inserted
"""


def is_transient(exc: BaseException) -> bool:
    """Failures of the database rather than of the data: retried, then the circuit breaker.

    The server went away, timed out or asked us to retry; or the schema or
    privileges are wrong (ProgrammingError: every statement is parameterised, so
    no message can cause one), which an operator fixes. Anything else (DataError,
    IntegrityError, ...) may be the data's fault, and the sink isolates it.
    """
    return isinstance(
        exc,
        (
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
            psycopg2.InternalError,
            psycopg2.ProgrammingError,
            psycopg2.errors.SerializationFailure,
            psycopg2.errors.DeadlockDetected,
            asyncio.TimeoutError,
            ConnectionError,
        ),
    )


def _log_retry(state) -> None:
    metrics.db_write_failures.inc()
    log.warning("Batch write failed (attempt %d), retrying: %r", state.attempt_number, state.outcome.exception())


def _log_migration_retry(state) -> None:
    log.warning("Database migrations failed (attempt %d), retrying: %r", state.attempt_number, state.outcome.exception())


def apply_migrations(database_url: str) -> list[str]:
    """Apply pending migrations under yoyo's lock; safe when workers start together."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(database_url)
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock(timeout=120):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


class Database:
    """A lazily created aiopg pool and the statements the service runs."""

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 10.0,
                 retry_max_seconds: float = 30.0, breaker: CircuitBreaker | None = None) -> None:
        self.url = url
        self.breaker = breaker or CircuitBreaker()
        self.pool_size = pool_size
        self.timeout = timeout
        self.retry_max_seconds = retry_max_seconds
        self._pool: aiopg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._migrated = False

    async def pool(self) -> aiopg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await aiopg.create_pool(
                        self.url, minsize=1, maxsize=self.pool_size, timeout=self.timeout
                    )
        return self._pool

    async def migrate(self) -> None:
        """Apply pending migrations once per process."""
        if not self._migrated:
            applied = await asyncio.to_thread(apply_migrations, self.url)
            if applied:
                log.info("Applied database migrations: %s", ", ".join(applied))
            self._migrated = True

    async def migrate_when_reachable(self) -> None:
        """migrate(), retried with back-off until PostgreSQL answers (a worker starts without it)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.5, max=self.retry_max_seconds),
            before_sleep=_log_migration_retry,
        ):
            with attempt:
                await self.migrate()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def ping(self) -> None:
        pool = await self.pool()
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")

    async def persist_batch(self, plan: BatchPlan) -> dict[uuid.UUID, datetime]:
        """Write a batch in one statement; returns created_at of the ids it inserted.

        Ids already present are left alone (ON CONFLICT DO NOTHING), which makes a
        replayed batch harmless.
        """
        pool = await self.pool()
        records, skipped = plan.records, plan.skipped
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(_PERSIST_BATCH, {
                **RECORDS.arrays(records), **EVENTS.arrays(skipped, prefix="s_"),
                "persisted": Status.PERSISTED, "duplicate": Status.DUPLICATE,
            })
            return dict(await cur.fetchall())

    async def persist_batch_with_retry(self, plan: BatchPlan) -> dict[uuid.UUID, datetime]:
        """persist_batch, retried with exponential back-off while the error is transient.

        While the circuit breaker is open no attempt is made: the caller (the
        agent) simply waits, consuming and acknowledging nothing, until the
        half-open trial.
        """
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.1, max=self.retry_max_seconds),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                await self._wait_for_breaker()
                try:
                    inserted = await self.persist_batch(plan)
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
            await self.ping()
        except Exception as exc:
            if is_transient(exc):
                self.breaker.record_failure()
            return
        self.breaker.record_success()

    async def fetch_records(self, ids: list[uuid.UUID]) -> list[TimestampRecord]:
        pool = await self.pool()
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                f"SELECT {RECORDS.select_list} FROM timestamp_records WHERE id = ANY(%s::uuid[])",
                (list(ids),),
            )
            return [RECORDS.from_row(row) for row in await cur.fetchall()]

    async def fetch_processed_events(self, correlation_id: str, limit: int = 1000) -> list[ProcessedEvent]:
        """The processing log of one correlation id, oldest first."""
        pool = await self.pool()
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                f"SELECT {EVENTS.select_list} FROM processed_events"
                ' WHERE correlation_id = %s ORDER BY processed_at, partition, "offset" LIMIT %s',
                (correlation_id, limit),
            )
            return [EVENTS.from_row(row) for row in await cur.fetchall()]

    async def iter_records(self, batch_size: int = 1000):
        """Every record, in id order, a batch at a time (keyset pagination)."""
        pool = await self.pool()
        after = uuid.UUID(int=0)
        while True:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(
                    f"SELECT {RECORDS.select_list} FROM timestamp_records WHERE id > %s ORDER BY id LIMIT %s",
                    (after, batch_size),
                )
                rows = await cur.fetchall()
            if not rows:
                return
            records = [RECORDS.from_row(row) for row in rows]
            yield records
            after = records[-1].id

    async def fetch_record(self, id_: uuid.UUID) -> TimestampRecord | None:
        found = await self.fetch_records([id_])
        return found[0] if found else None
