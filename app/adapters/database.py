"""PostgreSQL access: pool, migrations, batch writes and look-ups; SQL only.

Retries and the circuit breaker are the write policy's (app/sink/).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Callable
from datetime import datetime
from pathlib import Path

import aiopg
import psycopg2
import psycopg2.errors
import psycopg2.extras

from app.adapters.schema import EVENTS, RECORDS, event_of_record
from app.domain.batch_plan import BatchPlan
from app.domain.records import ProcessedEvent, Status, TimestampRecord

log = logging.getLogger(__name__)
psycopg2.extras.register_uuid()

MIGRATIONS_DIR = Path(__file__).parents[1] / "migrations"
# One statement, so one round trip and one implicit transaction per batch: the
# records, then a processed_events row per message (persisted or duplicate as
# the insert decided, plus the skipped ones). Column lists and the unnest()
# arrays (one parameter per column) come from the column specs of `app.adapters.schema`.
_PERSIST_BATCH = f"""
    WITH batch AS (
        SELECT * FROM {RECORDS.unnest()} WITH ORDINALITY AS b({RECORDS.insert_list}, ordinal)
    ), inserted AS (
        INSERT INTO timestamp_records ({RECORDS.insert_list})
        SELECT {RECORDS.insert_list} FROM batch
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
    SELECT b.ordinal, i.created_at FROM inserted i JOIN batch b USING (id)
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

    def __init__(self, url: str | Callable[[], str], *, pool_size: int = 10, timeout: float = 10.0) -> None:
        self._url = url  # a callable is asked at each use: a password file is read when a pool is made
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: aiopg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._migrated = False

    @property
    def url(self) -> str:
        """The libpq URL connections use (with the password of DATABASE_PASSWORD_FILE: never log it)."""
        return self._url() if callable(self._url) else self._url

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
                **RECORDS.array_parameters(records), **EVENTS.array_parameters(skipped, prefix="s_"),
                "persisted": Status.PERSISTED, "duplicate": Status.DUPLICATE,
            })
            # Positions in the batch, not ids: psycopg2 parses a returned uuid in Python.
            return {records[ordinal - 1].id: created_at for ordinal, created_at in await cur.fetchall()}

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

    async def expired_ids(self, after: tuple[datetime, uuid.UUID], retention_seconds: float,
                          limit: int) -> tuple[list[tuple[uuid.UUID, datetime]], datetime]:
        """Ids created after `after` (created_at, id) and more than `retention_seconds` ago, oldest first;
        and the boundary `now() - retention` on PostgreSQL's clock (one clock for every worker)."""
        pool = await self.pool()
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT id, created_at, now() - make_interval(secs => %(retention)s) FROM timestamp_records"
                " WHERE (created_at, id) > (%(created_at)s, %(id)s)"
                " AND created_at < now() - make_interval(secs => %(retention)s)"
                " ORDER BY created_at, id LIMIT %(limit)s",
                {"created_at": after[0], "id": after[1], "retention": retention_seconds, "limit": limit},
            )
            rows = await cur.fetchall()
            if rows:
                return [(row[0], row[1]) for row in rows], rows[0][2]
            await cur.execute("SELECT now() - make_interval(secs => %s)", (retention_seconds,))
            return [], (await cur.fetchone())[0]

    async def expiry_cursors(self, partitions: list[int]) -> dict[int, datetime]:
        """Per table partition, the created_at below which its expired ids were tombstoned."""
        pool = await self.pool()
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT table_partition, expired_before FROM table_expiry_cursors"
                              " WHERE table_partition = ANY(%s::int[])", (list(partitions),))
            return dict(await cur.fetchall())

    async def save_expiry_cursors(self, cursors: dict[int, datetime]) -> None:
        """Record how far each partition's expiry got (never backwards)."""
        if not cursors:
            return
        pool = await self.pool()
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO table_expiry_cursors (table_partition, expired_before)"
                " SELECT * FROM unnest(%s::int[], %s::timestamptz[])"
                " ON CONFLICT (table_partition) DO UPDATE SET expired_before ="
                " greatest(table_expiry_cursors.expired_before, EXCLUDED.expired_before)",
                (list(cursors), list(cursors.values())),
            )
