"""Bulk load for the replay: the live path's rows, written with COPY, partition groups in parallel.

Per batch, the rows are what the live path writes, by construction:
`plan_batch` (the agent's decode, validation, enrichment and in-batch
de-duplication) makes the records and the skipped events; their fields are
copied into a temporary staging table with one `COPY`, and one statement moves
them on:

    INSERT INTO timestamp_records ... ON CONFLICT (id) DO NOTHING RETURNING id
    INSERT INTO processed_events ... ON CONFLICT (topic, partition, "offset") DO NOTHING

with `persisted` for the records whose insert took and `duplicate` for the
others, exactly as `Database.persist_batch` decides. One batch, one
transaction, both tables: a crash loses whole batches only, and a re-run
re-writes nothing that is there (idempotent, so resumable by re-running).

Partitions are split into groups; each group has its own Kafka consumer and
its own PostgreSQL connection, driven from a thread of its own, so decoding
the next batch overlaps writing this one and the groups write in parallel.
Within a group batches are written in order, so the first message of a
command id in a partition is the one persisted, as in the live path.

A batch that fails for a reason other than the database being unreachable is
handed to the live path's sink (`TimestampSink.write`), which isolates the
failing messages as the live worker does (recorded `failed`; dead-lettered
when the replay sends dead letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql
from aiokafka import AIOKafkaConsumer, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from app.domain.commands import DecodeLimits
from app.adapters.database import is_transient
from app.domain.dead_letters import dead_letter
from app.domain.batch_plan import BatchPlan, ConsumedMessage, plan_batch
from app.domain.records import SourcePosition, Status
from app.sink.timestamp_sink import TimestampSink, _log_skipped
from app.domain.rfc3339 import utc_now

log = logging.getLogger(__name__)

Bounds = dict[TopicPartition, tuple[int, int]]  # [start, stop) per partition

# The staging table: one row per message, the union of both target tables' columns.
# `status` is NULL for a record (persisted or duplicate, decided by its insert).
_CREATE_STAGE = """
    CREATE TEMPORARY TABLE IF NOT EXISTS replay_stage (
        topic           text        NOT NULL,
        partition       integer     NOT NULL,
        "offset"        bigint      NOT NULL,
        event_id        uuid,
        correlation_id  text,
        status          text,
        error           text,
        processed_at    timestamptz NOT NULL,
        event_timestamp timestamptz,
        received_at     timestamptz
    ) ON COMMIT DELETE ROWS
"""
_COPY_STAGE = (
    'COPY replay_stage (topic, partition, "offset", event_id, correlation_id, status, error, processed_at,'
    " event_timestamp, received_at) FROM STDIN"
)
# Records are inserted in id order: two connections inserting the same ids
# (one command id in two partitions) then lock them in the same order.
_MERGE_STAGE = """
    WITH inserted AS (
        INSERT INTO timestamp_records (id, event_timestamp, received_at, processed_at,
                                       correlation_id, source_topic, source_partition, source_offset)
        SELECT event_id, event_timestamp, received_at, processed_at, correlation_id, topic, partition, "offset"
        FROM replay_stage WHERE status IS NULL ORDER BY event_id
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), logged AS (
        INSERT INTO processed_events (topic, partition, "offset", event_id, correlation_id,
                                      status, error, processed_at)
        SELECT s.topic, s.partition, s."offset", s.event_id, s.correlation_id,
               coalesce(s.status, CASE WHEN i.id IS NULL THEN %(duplicate)s ELSE %(persisted)s END),
               s.error, s.processed_at
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
    """The staging rows of a plan (COPY text format): its records, then its skipped events.

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


# ----------------------------------------------------- secondary indexes, built after the load
#
# Into empty tables, maintaining the secondary indexes row by row costs more
# than building them once at the end. Only plain btree indexes on columns are
# deferred, and only when their definition is exactly what CREATE INDEX on
# those columns gives back (checked against pg_get_indexdef), so rebuilding
# them from identifiers recreates them as the migrations made them. Which ones
# are deferred is kept in a table in the same transaction that drops them: a
# replay that dies leaves them listed, and the next replay rebuilds them.

DEFERRED_INDEXES = "replay_deferred_indexes"
TARGET_TABLES = ("timestamp_records", "processed_events")
_LOCK_KEY = 0x7265706C6179  # pg_advisory_xact_lock key: 'replay'; deferring and rebuilding never overlap

_DEFERRABLE = """
    SELECT n.nspname, t.relname, c.relname, array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_am am ON am.oid = c.relam
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
    WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
      AND i.indexprs IS NULL AND i.indpred IS NULL AND am.amname = 'btree'
      AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid)
    GROUP BY n.nspname, t.relname, c.relname, i.indexrelid
    HAVING pg_get_indexdef(i.indexrelid) = format('CREATE INDEX %%I ON %%I.%%I USING btree (%%s)', c.relname,
                                                  n.nspname, t.relname,
                                                  string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord))
    ORDER BY 1, 2, 3
"""


def _create_index(schema: str, table: str, name: str, columns: list[str]) -> sql.Composed:
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} USING btree ({})").format(
        sql.Identifier(name), sql.Identifier(schema), sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)))


def defer_secondary_indexes(url: str, lock_timeout_ms: int = 5000) -> list[str]:
    """When both target tables are empty, drop their deferrable secondary indexes (listing them); their names.

    Nothing is deferred when a table has rows, or when the tables stay locked
    by others for `lock_timeout_ms` (live workers keep their indexes then).
    """
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cur.execute("SET LOCAL lock_timeout = %s", (f"{lock_timeout_ms}ms",))
            try:
                cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(map(sql.Identifier, TARGET_TABLES))))
            except psycopg2.errors.LockNotAvailable:
                log.info("Target tables busy; secondary indexes are maintained during the load")
                return []
            cur.execute(sql.SQL("SELECT {}").format(sql.SQL(" OR ").join(
                sql.SQL("EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)) for table in TARGET_TABLES)))
            if cur.fetchone()[0]:  # not empty: the indexes stay, whoever else reads the tables needs them
                return []
            cur.execute(_DEFERRABLE, (list(TARGET_TABLES),))
            indexes = cur.fetchall()
            if not indexes:
                return []
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (schema_name text NOT NULL, table_name text NOT NULL,"
                " index_name text NOT NULL, columns text[] NOT NULL, PRIMARY KEY (schema_name, index_name))"
            ).format(sql.Identifier(DEFERRED_INDEXES)))
            for schema, table, name, columns in indexes:
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
                    sql.Identifier(DEFERRED_INDEXES)), (schema, table, name, columns))
                cur.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        return [name for _, _, name, _ in indexes]
    finally:
        conn.close()


def rebuild_deferred_indexes(url: str) -> list[str]:
    """Create every index a replay deferred (this one or an interrupted one) and forget the list; their names."""
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (DEFERRED_INDEXES,))
            if not cur.fetchone()[0]:
                return []
            cur.execute(sql.SQL("SELECT schema_name, table_name, index_name, columns FROM {} ORDER BY 1, 2, 3")
                        .format(sql.Identifier(DEFERRED_INDEXES)))
            indexes = cur.fetchall()
            for schema, table, name, columns in indexes:
                cur.execute(_create_index(schema, table, name, columns))
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(DEFERRED_INDEXES)))
        return [name for _, _, name, _ in indexes]
    finally:
        conn.close()


@dataclass
class BulkCounts:
    """What writing some batches came to."""

    events: int = 0
    rows_inserted: int = 0  # timestamp_records
    rows_already_present: int = 0  # messages whose record was not inserted (duplicates), invalid and failed excluded
    events_already_recorded: int = 0  # positions that already had their processed_events row
    invalid: int = 0
    failed: int = 0
    isolated_batches: int = 0  # batches handed to the live path's sink after a failure

    def add(self, other: "BulkCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


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


def partition_groups(partitions: list[TopicPartition], groups: int) -> list[list[TopicPartition]]:
    """Partitions dealt round-robin into at most `groups` non-empty groups."""
    groups = max(1, min(groups, len(partitions)))
    dealt = [sorted(partitions, key=lambda tp: tp.partition)[i::groups] for i in range(groups)]
    return [group for group in dealt if group]


def group_name(group: list[TopicPartition]) -> str:
    return "p" + ",".join(str(tp.partition) for tp in group)


@dataclass
class GroupLoad:
    """One partition group's reading and writing."""

    bootstrap_servers: str
    topic: str
    bounds: Bounds
    writer: StageWriter
    sink: TimestampSink
    limits: DecodeLimits
    batch_size: int
    bar: object
    counts: BulkCounts = field(default_factory=BulkCounts)
    send_dead_letters: bool = False

    async def run(self) -> BulkCounts:
        remaining = {tp: stop for tp, (start, stop) in self.bounds.items() if start < stop}
        if not remaining:
            return self.counts
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_poll_records=self.batch_size)
        await consumer.start()
        pending: asyncio.Future | None = None
        try:
            consumer.assign(list(self.bounds))
            for tp, (start, _) in self.bounds.items():
                consumer.seek(tp, start)
            while remaining:
                messages = await self._read(consumer, remaining)
                if not messages:
                    continue
                plan = plan_batch(messages, processed_at=utc_now(), limits=self.limits)
                _log_skipped(plan)
                if self.send_dead_letters:
                    await self._dead_letters(messages, plan)
                rows = stage_rows(plan)
                if pending is not None:
                    await pending  # batches of a group are written in order
                pending = asyncio.ensure_future(self._write(messages, plan, rows))
            if pending is not None:
                await pending
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            await consumer.stop()
        return self.counts

    async def _read(self, consumer: AIOKafkaConsumer, remaining: dict[TopicPartition, int]) -> list[ConsumedMessage]:
        """Up to batch_size messages of the remaining ranges; whatever is buffered once the first arrived."""
        messages: list[ConsumedMessage] = []
        topic = self.topic
        while remaining and len(messages) < self.batch_size:
            fetched = await consumer.getmany(*remaining, timeout_ms=0 if messages else 1000,
                                             max_records=self.batch_size - len(messages))
            for tp, records in fetched.items():
                stop = remaining.get(tp, -1)
                partition = tp.partition
                messages.extend(
                    ConsumedMessage(SourcePosition(topic, partition, record.offset), record.value, record.headers)
                    for record in records if record.offset < stop
                )
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
            if not fetched and messages:
                break
        return messages

    async def _dead_letters(self, messages: list[ConsumedMessage], plan: BatchPlan) -> None:
        """As the live sink: the invalid messages' dead letters, sent before their rows are written."""
        by_position = {m.source: m for m in messages}
        invalid = [e for e in plan.skipped if e.status == Status.INVALID]
        await self.sink.send_dead_letters([dead_letter(by_position[e.source], e) for e in invalid])

    async def _write(self, messages: list[ConsumedMessage], plan: BatchPlan, rows: str) -> None:
        invalid = sum(1 for e in plan.skipped if e.status == Status.INVALID)
        batch = BulkCounts(events=len(messages), invalid=invalid)
        try:
            inserted, logged = await self.writer.write(rows)
        except Exception as exc:
            log.warning("A replay batch of %d messages failed (%s: %s); writing it through the live path's sink,"
                        " which isolates the failing messages", len(messages), type(exc).__name__, exc)
            batch.events_already_recorded = await self.writer.run(_positions_present, self.topic, messages)
            outcome = await self.sink.write(messages)
            inserted, batch.invalid, batch.failed = outcome.inserted, outcome.invalid, outcome.failed
            batch.isolated_batches = 1
        else:
            batch.events_already_recorded = len(messages) - logged
        batch.rows_inserted = inserted
        batch.rows_already_present = len(messages) - inserted - batch.invalid - batch.failed
        self.counts.add(batch)
        self.bar.update(len(messages))


def _positions_present(conn, topic: str, messages: list[ConsumedMessage]) -> int:
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


async def load(bootstrap_servers: str, topic: str, database_url: str, bounds: Bounds, sink: TimestampSink,
               *, connections: int, batch_size: int, limits: DecodeLimits, send_dead_letters: bool,
               progress: bool) -> BulkCounts:
    """Replay `bounds` into the database with `connections` partition groups in parallel."""
    from tqdm import tqdm

    groups = partition_groups(list(bounds), connections)
    writers = [StageWriter(database_url, group_name(group)) for group in groups]
    bars = [
        tqdm(total=sum(max(0, bounds[tp][1] - bounds[tp][0]) for tp in group), unit="event", unit_scale=True,
             desc=f"replay {group_name(group)}", position=i, disable=not progress, leave=True, smoothing=0.1)
        for i, group in enumerate(groups)
    ]
    loads = [
        GroupLoad(bootstrap_servers, topic, {tp: bounds[tp] for tp in group}, writer, sink, limits, batch_size,
                  bar, send_dead_letters=send_dead_letters)
        for group, writer, bar in zip(groups, writers, bars)
    ]
    total = BulkCounts()
    started = time.monotonic()
    try:
        try:
            async with asyncio.TaskGroup() as running:  # one group failing cancels the others
                tasks = [running.create_task(group.run()) for group in loads]
        except ExceptionGroup as failed:
            raise failed.exceptions[0]  # what the caller would have seen from one group
        for task in tasks:
            total.add(task.result())
    finally:
        for bar in bars:
            bar.close()
        for writer in writers:
            await writer.close()
    log.info("Bulk load of %d events in %.1f s", total.events, time.monotonic() - started)
    return total
