"""The bulk load's staging table: a batch's rows in COPY's text format, and the statement that moves them on.

Per batch, the rows are what the live path writes, by construction:
`plan_batch` (the agent's decode, validation, enrichment and in-batch
de-duplication) makes the records and the skipped events; their fields are
copied into a temporary staging table with one `COPY`, and one statement moves
them on:

    INSERT INTO timestamp_records ... ON CONFLICT (id) DO NOTHING RETURNING id
    INSERT INTO processed_events ... ON CONFLICT (topic, partition, "offset") DO NOTHING

with `persisted` for the records whose insert took and `duplicate` for the
others, exactly as `Database.persist_batch` decides. One batch, one
transaction, both tables. The column lists come from the column specs of `app.adapters.schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Callable

import psycopg2
import psycopg2.extensions
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from app.adapters.database import is_transient
from app.adapters.schema import EVENTS, RECORD_ONLY, RECORDS, column_list
from app.domain.batch_plan import BatchPlan, ConsumedMessage
from app.domain.records import Status

log = logging.getLogger(__name__)

# The staging table: one row per message, the union of both target tables'
# columns: processed_events' own, then the record's others. `status` is NULL
# for a record (persisted or duplicate, decided by its insert).
STAGE_COLUMNS = EVENTS.written + RECORD_ONLY
_CREATE_STAGE = f"""
    CREATE TEMPORARY TABLE IF NOT EXISTS replay_stage (
        {", ".join(f"{c.sql} {c.sql_type}" for c in STAGE_COLUMNS)}
    ) ON COMMIT DELETE ROWS
"""
_COPY_STAGE = f"COPY replay_stage ({column_list(STAGE_COLUMNS)}) FROM STDIN"
# The staged column that holds each written record column (event_id holds id, topic source_topic, ...).
_STAGED_RECORD = [next((e for e in EVENTS.written if e.of_record == c.name), c) for c in RECORDS.written]
# A staged record's status is its insert's outcome; a skipped event has its own.
_STATUS_OF_STAGED = "coalesce(s.status, CASE WHEN i.id IS NULL THEN %(duplicate)s ELSE %(persisted)s END)"
# Records are inserted in id order: two connections inserting the same ids
# (one command id in two partitions) then lock them in the same order.
_MERGE_STAGE = f"""
    WITH inserted AS (
        INSERT INTO timestamp_records ({RECORDS.insert_list})
        SELECT {column_list(_STAGED_RECORD)}
        FROM replay_stage WHERE status IS NULL ORDER BY event_id
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), logged AS (
        INSERT INTO processed_events ({EVENTS.insert_list})
        SELECT {column_list(EVENTS.written, "s", status=_STATUS_OF_STAGED)}
        FROM replay_stage s LEFT JOIN inserted i ON s.status IS NULL AND i.id = s.event_id
        ON CONFLICT (topic, partition, "offset") DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM logged)
"""
_POSITIONS_PRESENT = """
    SELECT count(*) FROM processed_events
    WHERE topic = %s AND (partition, "offset") IN (SELECT * FROM unnest(%s::integer[], %s::bigint[]))
"""

_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str | None) -> str:
    """A value in COPY's text format."""
    return _NULL if value is None else value.translate(_COPY_ESCAPES)


def stage_rows(plan: BatchPlan) -> str:
    """The staging rows of a plan (COPY text format, STAGE_COLUMNS in order): its records, then its skipped events.

    Written out per row rather than from the column spec: this is the replay's
    hot loop (`tests.unit.test_schema` checks the fields against the spec).

    Values every row of a batch shares (topic, processed_at) are formatted
    once; uuids are written as their 32 hex digits, which PostgreSQL reads as
    the same uuid.
    """
    lines = []
    append = lines.append
    texts: dict[object, str] = {}  # topic and processed_at values -> their text, once per batch

    def once(value, format_) -> str:
        text = texts.get(value)
        if text is None:
            text = texts[value] = format_(value)
        return text

    for r in plan.records:
        source = r.source
        received_at = _NULL if r.received_at is None else r.received_at.isoformat()
        append(f"{once(source.topic, _text)}\t{source.partition}\t{source.offset}\t{r.id.hex}"
               f"\t{_NULL if r.correlation_id is None else _text(r.correlation_id)}\t\\N\t\\N"
               f"\t{once(r.processed_at, datetime.isoformat)}\t{r.event_timestamp.isoformat()}\t{received_at}\n")
    for e in plan.skipped:
        source = e.source
        append(f"{once(source.topic, _text)}\t{source.partition}\t{source.offset}"
               f"\t{_NULL if e.event_id is None else e.event_id.hex}\t{_text(e.correlation_id)}\t{_text(e.status)}"
               f"\t{_text(e.error)}\t{once(e.processed_at, datetime.isoformat)}\t\\N\t\\N\n")
    return "".join(lines)


class StageWriter:
    """One PostgreSQL connection, used from one thread of its own, writing batches through the staging table."""

    def __init__(self, url: str, name: str, retry_max_seconds: float = 30.0) -> None:
        self.url = url
        self.name = name
        self.retry_max_seconds = retry_max_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replay-{name}")
        self._conn: psycopg2.extensions.connection | None = None

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(self.url, connect_timeout=10, application_name=f"replay {self.name}",
                                    keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
            with conn.cursor() as cur:
                cur.execute(_CREATE_STAGE)
            conn.commit()
            self._conn = conn
        return self._conn

    def _write(self, rows: str) -> tuple[int, int]:
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                cur.copy_expert(_COPY_STAGE, io.StringIO(rows), size=1 << 18)
                cur.execute(_MERGE_STAGE, {"persisted": Status.PERSISTED, "duplicate": Status.DUPLICATE})
                inserted, logged = cur.fetchone()
            conn.commit()
            return inserted, logged
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        """Roll back, or drop a broken connection (the next write reconnects)."""
        if self._conn is None:
            return
        try:
            if self._conn.closed:
                self._conn = None
            else:
                self._conn.rollback()
        except psycopg2.Error:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None

    async def write(self, rows: str) -> tuple[int, int]:
        """COPY the rows into the stage and move them on; (records inserted, processed_events inserted).

        Retried with back-off while the error is transient (as the live path's
        batch write); any other error is raised for the caller to isolate.
        """
        loop = asyncio.get_running_loop()
        async for attempt in AsyncRetrying(retry=retry_if_exception(is_transient),
                                           wait=wait_exponential(multiplier=0.1, max=self.retry_max_seconds),
                                           before_sleep=_log_retry, reraise=True):
            with attempt:
                future = loop.run_in_executor(self._executor, self._write, rows)
                try:
                    return await asyncio.shield(future)
                except asyncio.CancelledError:
                    self._cancel()
                    with contextlib.suppress(BaseException):
                        await future
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, function: Callable, *args):
        """Run `function(connection, *args)` on this writer's thread and connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(self._connection(), *args))

    def _cancel(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)


def _log_retry(state) -> None:
    log.warning("Replay batch write failed (attempt %d), retrying: %r", state.attempt_number,
                state.outcome.exception())


def positions_present(conn, topic: str, messages: list[ConsumedMessage]) -> int:
    """How many of the messages' positions already have a processed_events row (one query)."""
    try:
        with conn.cursor() as cur:
            cur.execute(_POSITIONS_PRESENT, (topic, [m.source.partition for m in messages],
                                             [m.source.offset for m in messages]))
            (present,) = cur.fetchone()
        conn.commit()
        return present
    except BaseException:
        conn.rollback()
        raise
