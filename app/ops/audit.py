"""Offset audit: messages below the group's committed offset that have no processed_events row.

Rows are written before offsets are committed, so below the committed offset
every offset that holds a message must have a row; one without is a message
acknowledged but never persisted (silent loss). Offsets below the log start
(deleted by retention) are out of scope, and a candidate gap is confirmed by
reading it from Kafka, because some offsets hold no record (transaction
markers, compacted-away records).

Both `python -m app audit` (every offset from the log start) and the worker's
timer (the last AUDIT_WINDOW_MESSAGES offsets) run `audit()`. Nothing here
writes: Kafka is read without a consumer group and PostgreSQL with SELECTs.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field
from typing import Iterable

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.adapters.kafka_client import Kafka, client_options
from app.adapters.topic_reader import ReadStalled, TopicReader, reader_consumer
from app.domain.partition_progress import stalled_in_audit

Range = tuple[int, int]  # [start, stop) offsets


class AuditError(RuntimeError):
    """The audit could not read what it needs; the message says what."""


# ------------------------------------------------------------- pure logic


def append_offset(runs: list[Range], offset: int) -> None:
    """Add an offset, larger than every offset already in `runs`, to those runs."""
    if runs and runs[-1][1] == offset:
        runs[-1] = (runs[-1][0], offset + 1)
    else:
        runs.append((offset, offset + 1))


def runs(offsets: Iterable[int]) -> list[Range]:
    """Sorted, distinct offsets as maximal [start, stop) runs: 3 4 5 9 -> [3, 6) [9, 10)."""
    result: list[Range] = []
    for offset in offsets:
        append_offset(result, offset)
    return result


def gaps(present: Iterable[Range], lo: int, hi: int) -> list[Range]:
    """The parts of [lo, hi) not covered by the sorted, disjoint runs `present`."""
    result: list[Range] = []
    position = lo
    for start, stop in present:
        start, stop = max(start, lo), min(stop, hi)
        if start >= stop:
            continue
        if start > position:
            result.append((position, start))
        position = max(position, stop)
    if position < hi:
        result.append((position, hi))
    return result


def missing_ranges(offsets: Iterable[int], lo: int, hi: int) -> list[Range]:
    """Ranges of [lo, hi) absent from the sorted offsets that have a row."""
    return gaps(runs(offsets), lo, hi)


def window(committed: int | None, log_start: int, size: int | None = None) -> Range:
    """The offsets to audit: [log start, committed), or only its last `size` offsets.

    Empty without a committed offset, or when retention deleted everything
    below it.
    """
    if committed is None:
        return (log_start, log_start)
    lo = log_start if size is None else max(log_start, committed - size)
    return (min(lo, committed), committed)


def count(ranges: Iterable[Range]) -> int:
    return sum(stop - start for start, stop in ranges)


def _messages(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


@dataclass(frozen=True)
class PartitionAudit:
    partition: int
    committed: int | None
    log_start: int
    window: Range
    rows: int  # processed_events rows in the window
    gaps: list[Range] = field(default_factory=list)  # offsets holding a message, without a row

    @property
    def missing(self) -> int:
        return count(self.gaps)


@dataclass(frozen=True)
class AuditReport:
    topic: str
    group: str
    partitions: list[PartitionAudit]

    @property
    def missing(self) -> int:
        return sum(p.missing for p in self.partitions)

    @property
    def committed_any(self) -> bool:
        return any(p.committed is not None for p in self.partitions)

    def ranges(self) -> dict[int, list[Range]]:
        """Partition -> gap ranges, for the partitions that have any (what a repair replays)."""
        return {p.partition: list(p.gaps) for p in self.partitions if p.gaps}

    def lines(self) -> list[str]:
        rows = [("partition", "committed", "log start", "rows", "missing")] + [
            (str(p.partition), "-" if p.committed is None else str(p.committed), str(p.log_start),
             str(p.rows), str(p.missing))
            for p in self.partitions
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [f"offset audit of {self.topic}, consumer group {self.group}"]
        lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
        gap_lines = [f"{p.partition}: [{start}, {stop}) {_messages(stop - start)}"
                     for p in self.partitions for start, stop in p.gaps]
        if gap_lines:
            lines += ["gaps (messages below the committed offset without a processed_events row):", *gap_lines]
        ranges = len(gap_lines)
        lines.append(f"total: {_messages(self.missing)} missing in {ranges} range{'' if ranges == 1 else 's'}")
        return lines

    def as_dict(self) -> dict:
        return {
            "topic": self.topic,
            "group": self.group,
            "missing": self.missing,
            "partitions": [
                {"partition": p.partition, "committed": p.committed, "log_start": p.log_start,
                 "window": list(p.window), "rows": p.rows, "missing": p.missing,
                 "gaps": [list(g) for g in p.gaps]}
                for p in self.partitions
            ],
        }


# ------------------------------------------------------- PostgreSQL (read-only)

# One statement for all partitions; each count is a range scan of the primary key.
_COUNT_ROWS = """
    SELECT w.partition,
           (SELECT count(*) FROM processed_events e
             WHERE e.topic = %s AND e.partition = w.partition AND e."offset" >= w.lo AND e."offset" < w.hi)
      FROM unnest(%s::integer[], %s::bigint[], %s::bigint[]) AS w(partition, lo, hi)
"""
# Runs of consecutive offsets with a row ("gaps and islands"): one row per run, not per offset.
_PRESENT_RUNS = """
    SELECT min("offset"), max("offset") + 1
      FROM (SELECT "offset", "offset" - row_number() OVER (ORDER BY "offset") AS island
              FROM processed_events
             WHERE topic = %s AND partition = %s AND "offset" >= %s AND "offset" < %s) AS present
     GROUP BY island
     ORDER BY 1
"""


async def count_rows(database, topic: str, windows: dict[int, Range]) -> dict[int, int]:
    """processed_events rows per partition within its [lo, hi) window."""
    if not windows:
        return {}
    partitions = sorted(windows)
    pool = await database.pool()
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(_COUNT_ROWS, (topic, partitions, [windows[p][0] for p in partitions],
                                        [windows[p][1] for p in partitions]))
        return {partition: rows for partition, rows in await cur.fetchall()}


async def present_runs(database, topic: str, partition: int, lo: int, hi: int) -> list[Range]:
    """The runs of offsets in [lo, hi) that have a processed_events row, in order."""
    pool = await database.pool()
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(_PRESENT_RUNS, (topic, partition, lo, hi))
        return [(start, stop) for start, stop in await cur.fetchall()]


# ------------------------------------------------------------ Kafka (read-only)


def isolation_level(processing_guarantee: str) -> str:
    """What the workers' consumer sees: under exactly_once, records of aborted transactions are skipped."""
    return "read_committed" if processing_guarantee == "exactly_once" else "read_uncommitted"


class KafkaView:
    """Committed offsets, log starts and records of one topic, read without joining any group."""

    READ_THROUGH = 500  # read past this many offsets to the next range rather than seek (one fetch either way)
    IDLE_POLLS = 30  # empty one-second polls without progress before giving up

    def __init__(self, kafka: Kafka, topic: str, isolation: str = "read_uncommitted") -> None:
        self.topic = topic
        self._admin = AIOKafkaAdminClient(**client_options(kafka))
        # group_id=None: explicit assignment only, no coordinator, no commits.
        self._consumer = reader_consumer(kafka, isolation_level=isolation)

    async def __aenter__(self) -> "KafkaView":
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._admin.close()

    def _tps(self, partitions: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in partitions]

    async def committed(self, group: str, partitions: list[int]) -> dict[int, int | None]:
        """The group's committed offset per partition (None: never committed). An OffsetFetch, no join."""
        if not partitions:
            return {}
        found = await self._admin.list_consumer_group_offsets(group, partitions=self._tps(partitions))
        offsets = {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == self.topic}
        return {p: offsets[p] if offsets.get(p, -1) >= 0 else None for p in partitions}

    async def log_starts(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:
            return {}
        starts = await self._consumer.beginning_offsets(self._tps(partitions))
        return {tp.partition: offset for tp, offset in starts.items()}

    async def end_offsets(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:
            return {}
        ends = await self._consumer.end_offsets(self._tps(partitions))
        return {tp.partition: offset for tp, offset in ends.items()}

    async def head_timestamps(self, heads: dict[int, Range]) -> dict[int, int]:
        """Per partition, the broker timestamp (ms) of the first record in [start, stop): the oldest unprocessed."""
        reader = TopicReader.over(self._consumer, self.topic, idle_polls=self.IDLE_POLLS)
        found = {}
        for partition, span in heads.items():
            try:
                async for batch in reader.batches({partition: span}):
                    if batch:
                        found[partition] = batch[0].timestamp
                        break
            except ReadStalled as exc:
                raise AuditError(str(exc)) from None
        return found

    async def record_runs(self, partition: int, ranges: list[Range]) -> list[Range]:
        """The offsets of sorted, disjoint `ranges` that hold a record, as runs.

        Offsets holding no record (transaction markers, compacted away, deleted
        meanwhile by retention) are simply never returned by a fetch. Ranges
        closer than READ_THROUGH are read as one span (one fetch either way).
        """
        starts = [start for start, _ in ranges]
        reader = TopicReader.over(self._consumer, self.topic, idle_polls=self.IDLE_POLLS)
        found: list[Range] = []
        for span in _spans(ranges, self.READ_THROUGH):
            try:
                async for batch in reader.batches({partition: span}):
                    for record in batch:
                        i = bisect.bisect_right(starts, record.offset) - 1
                        in_a_range = i >= 0 and record.offset < ranges[i][1]
                        if in_a_range and (not found or record.offset >= found[-1][1]):  # each offset once, in order
                            append_offset(found, record.offset)
            except ReadStalled as exc:
                raise AuditError(str(exc)) from None
        return found


def _spans(ranges: list[Range], read_through: int) -> list[Range]:
    """Sorted, disjoint ranges joined where fewer than `read_through` offsets lie between them."""
    spans: list[Range] = []
    for start, stop in ranges:
        if spans and start - spans[-1][1] <= read_through:
            spans[-1] = (spans[-1][0], stop)
        else:
            spans.append((start, stop))
    return spans


# ------------------------------------------------------------------ audit


async def audit(kafka: KafkaView, database, group: str, partitions: Iterable[int],
                window_size: int | None = None) -> AuditReport:
    """Audit `partitions` of kafka.topic for `group`: everything from the log start, or the last `window_size` offsets.

    Cheap when nothing is missing: one count per partition. Only a partition
    whose count falls short is listed (runs of rows) and its candidate gaps
    read from Kafka.
    """
    partitions = sorted(partitions)
    committed = await kafka.committed(group, partitions)
    log_starts = await kafka.log_starts(partitions)
    windows = {p: window(committed[p], log_starts[p], window_size) for p in partitions}
    rows = await count_rows(database, kafka.topic, {p: w for p, w in windows.items() if w[0] < w[1]})
    results = []
    for p in partitions:
        lo, hi = windows[p]
        found: list[Range] = []
        if rows.get(p, 0) < hi - lo:
            candidates = gaps(await present_runs(database, kafka.topic, p, lo, hi), lo, hi)
            found = await kafka.record_runs(p, candidates)
        results.append(PartitionAudit(p, committed[p], log_starts[p], (lo, hi), rows.get(p, 0), found))
    return AuditReport(kafka.topic, group, results)


# ------------------------------------------------------------------ stalls


@dataclass
class StallReport:
    """Partitions whose committed offset stayed behind the end, with an old oldest-unprocessed record."""

    topic: str
    group: str
    threshold_seconds: float
    confirm_seconds: float
    stalled: dict[int, dict] = field(default_factory=dict)  # partition -> committed, end, head age

    def lines(self) -> list[str]:
        if not self.stalled:
            return [f"no stalled partition (none behind with a record older than {self.threshold_seconds:g} s "
                    f"and a committed offset that did not move in {self.confirm_seconds:g} s)"]
        return [f"partition {p} STALLED: committed offset {s['committed']} of {s['end']}; its oldest unprocessed "
                f"record is {s['head_age_seconds']:.0f} s old and the committed offset did not move in "
                f"{self.confirm_seconds:g} s (PARTITION_STALL_SECONDS={self.threshold_seconds:g}); "
                "see docs/operations.md#partitionstalled" for p, s in sorted(self.stalled.items())]

    def as_dict(self) -> dict:
        return {"stalled": {str(p): s for p, s in sorted(self.stalled.items())},
                "stall_threshold_seconds": self.threshold_seconds}


async def find_stalls(kafka: KafkaView, group: str, partitions: list[int], threshold_seconds: float,
                      confirm_seconds: float, now_ms=None, sleep=None) -> StallReport:
    """Stalled partitions of `group` (`app.domain.partition_progress`, stalled_in_audit): behind, with
    the oldest unprocessed record older than the threshold, and no commit during `confirm_seconds`
    (waited only when some partition is a candidate)."""
    now_ms = now_ms or (lambda: time.time() * 1000)
    sleep = sleep or asyncio.sleep
    report = StallReport(kafka.topic, group, threshold_seconds, confirm_seconds)
    before = await kafka.committed(group, partitions)
    starts = await kafka.log_starts(partitions)
    ends = await kafka.end_offsets(partitions)
    heads = {p: max(before[p] or 0, starts[p]) for p in partitions}
    behind = {p: (heads[p], ends[p]) for p in partitions if heads[p] < ends[p]}
    stamps = await kafka.head_timestamps(behind)
    ages = {p: (now_ms() - stamp) / 1000 for p, stamp in stamps.items()}
    if not any(age > threshold_seconds for age in ages.values()):
        return report
    await sleep(confirm_seconds)
    after = await kafka.committed(group, partitions)
    committed = {p: heads[p] if after[p] is None else after[p] for p in partitions}
    base = {p: heads[p] if before[p] is None else before[p] for p in partitions}
    for p, age in stalled_in_audit(base, committed, ends, ages, threshold_seconds).items():
        report.stalled[p] = {"committed": committed[p], "end": ends[p], "head_age_seconds": round(age, 1)}
    return report
