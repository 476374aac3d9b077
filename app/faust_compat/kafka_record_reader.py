"""aiokafka's record reader, made unable to crash the consumer on a record it cannot decode.

aiokafka (0.13, 0.14) decodes each header name as strict UTF-8 while it parses
a fetched batch. Kafka header names are bytes on the wire and the broker keeps
whatever a producer sent (librdkafka, sarama and franz-go take bytes), so one
record with a name such as ``b"x-\\xff\\xfe-name"`` made ``getmany()`` raise
``UnicodeDecodeError``: Faust's Fetcher crashed, the worker exited, and every
worker that took the partition over crashed the same way.

`install()` swaps the ``MemoryRecords`` class the fetcher parses responses
with for `TolerantMemoryRecords`. Each batch is read by aiokafka's own (C)
reader first; only a batch that raises is read again by `_TolerantBatch`,
which keeps a header name that is not UTF-8 as a ``str`` holding its bytes
(``surrogateescape``). The record then reaches the agent like any other, which
finds the name with `undecodable_header_names` and dead-letters the record
(``dlq.reason=undecodable_record``). A normal batch costs a list of its
records, built ahead of the fetcher (measured by ``make bench``).

A batch that neither reader can read (no such record is known; a codec this
process lacks would be one) is not skipped: the partition stops in front of it,
`blocked_partitions` names the topic, partition, offset and reason for the
readiness probe, and the worker stays up. Nothing after it is read, so nothing
after it can be acknowledged.

Only this module knows aiokafka's fetcher internals; `check_aiokafka_version`
refuses a release it was not written for, and
``tests.unit.test_kafka_record_reader`` fails when an upgrade changes them.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass

import aiokafka
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.util import decode_varint

log = logging.getLogger(__name__)

SUPPORTED_AIOKAFKA = ("0.13.", "0.14.")
# The fetcher re-reads a blocked partition as soon as it is refused; this keeps
# that loop (in Faust's consumer thread, never the web's) from spinning.
BLOCKED_RETRY_SECONDS = 1.0

_ORIGINAL_MEMORY_RECORDS = aiokafka_fetcher.MemoryRecords
_ORIGINAL_PARTITION_RECORDS = aiokafka_fetcher.PartitionRecords
_LOG_OVERHEAD = struct.calcsize(">qi")  # base offset, batch length
_MAGIC_OFFSET = struct.calcsize(">qii")


# ------------------------------------------------------------ the tolerant reader


@dataclass(frozen=True)
class Record:
    """What aiokafka's fetcher reads of a record (the attributes of its own record classes)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list
    checksum: None = None


class _TolerantBatch(_DefaultRecordBatchPy):
    """aiokafka's pure-Python batch reader (header, decompression, record count), with a
    record reader of our own that keeps a header name that is not UTF-8.

    The record layout is Kafka's message format v2 (KIP-98): length, attributes,
    timestamp delta, offset delta, key, value, headers, each length a zig-zag varint.
    """

    def _read_msg(self, decode_varint=decode_varint) -> Record:  # noqa: D102 (aiokafka's hook)
        buffer, pos = self._buffer, self._pos
        length, pos = decode_varint(buffer, pos)
        end = pos + length
        _attributes, pos = decode_varint(buffer, pos)
        timestamp_delta, pos = decode_varint(buffer, pos)
        offset_delta, pos = decode_varint(buffer, pos)
        key, pos = _nullable_bytes(buffer, pos)
        value, pos = _nullable_bytes(buffer, pos)
        count, pos = decode_varint(buffer, pos)
        if count < 0:
            raise ValueError(f"negative header count {count}")
        headers = []
        for _ in range(count):
            name, pos = _nullable_bytes(buffer, pos)
            if name is None:
                raise ValueError("a header without a name")
            header_value, pos = _nullable_bytes(buffer, pos)
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))
        if pos != end:
            raise ValueError(f"record of {length} bytes read as {length + pos - end}")
        self._pos = pos
        log_append_time = self.timestamp_type == self.LOG_APPEND_TIME
        timestamp = self.max_timestamp if log_append_time else self.first_timestamp + timestamp_delta
        return Record(self.base_offset + offset_delta, timestamp, self.timestamp_type, key, value, headers)


def _nullable_bytes(buffer: bytearray, pos: int) -> tuple[bytes | None, int]:
    size, pos = decode_varint(buffer, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buffer):
        raise ValueError("a field runs past the end of its record")
    return bytes(buffer[pos:pos + size]), pos + size


# ------------------------------------------------------------ blocked partitions


@dataclass(frozen=True)
class Blocked:
    """A partition the consumer cannot read past."""

    topic: str
    partition: int
    offset: int
    reason: str

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}] cannot be read at offset {self.offset}: {self.reason}"


class BlockedPartitions:
    """Partitions stopped in front of a batch no reader can decode (written by the consumer thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked: dict[tuple[str, int], Blocked] = {}

    def block(self, topic: str, partition: int, offset: int, reason: str) -> None:
        with self._lock:
            known = self._blocked.get((topic, partition))
            if known is not None and known.offset == offset:
                return
            self._blocked[(topic, partition)] = blocked = Blocked(topic, partition, offset, reason)
        log.error("Consumer stopped: %s. Nothing after it is read or acknowledged; the worker reports not ready. "
                  "See the runbook, 'A partition the consumer cannot read'", blocked.describe())

    def clear(self, topic: str, partition: int) -> None:
        with self._lock:
            if self._blocked.pop((topic, partition), None) is not None:
                log.warning("Consumer reads %s[%d] again", topic, partition)

    def current(self, assigned=None) -> list[Blocked]:
        """What is blocked now, among `assigned` (topic, partition) pairs when given."""
        with self._lock:
            found = list(self._blocked.values())
        if assigned is not None:
            wanted = set(assigned)
            found = [b for b in found if (b.topic, b.partition) in wanted]
        return sorted(found, key=lambda b: (b.topic, b.partition))


blocked_partitions = BlockedPartitions()


# ------------------------------------------------------------ the fetcher's side


class _ReadBatch:
    """One batch, already read: aiokafka's batch attributes, and its records to iterate."""

    def __init__(self, batch, records: list) -> None:
        self._batch = batch
        self._records = records
        self._iterator = iter(records)

    def __getattr__(self, name):  # base_offset, next_offset, producer_id, is_control_batch, ...
        return getattr(self._batch, name)

    def validate_crc(self) -> bool:
        return True  # checked before the records were read

    def __iter__(self):
        return iter(self._records)

    def __next__(self):  # the fetcher reads a control batch's marker with next()
        return next(self._iterator)


class _BlockedBatch:
    """Stands for a batch that cannot be read: yields the records read before the failure, then
    points the fetcher back at the first record it could not read, so the partition goes no further."""

    producer_id = None  # no transaction bookkeeping for what is never passed on
    is_control_batch = False
    is_transactional = False

    def __init__(self, records: list, stop_at: int, owner: "TolerantMemoryRecords") -> None:
        self._records = records
        self._stop_at = stop_at
        self._owner = owner
        self.base_offset = records[0].offset if records else stop_at

    @property
    def next_offset(self) -> int:
        # Never behind where this fetch started (a batch may begin below the fetch offset).
        return max(self._stop_at, self._owner.fetch_offset)

    def validate_crc(self) -> bool:
        return True

    def __iter__(self):
        return iter(self._records)


class TolerantMemoryRecords:
    """aiokafka's ``MemoryRecords`` (the batches of one partition in a fetch response), read
    batch by batch ahead of the fetcher so a batch that cannot be decoded is read tolerantly
    or, failing that, stops the partition in front of it."""

    tolerant_batch: type = _TolerantBatch  # set by install()

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._batches = _ORIGINAL_MEMORY_RECORDS(data)
        self._position = 0
        self._next = None
        self._stopped = False
        self._blocked: tuple[int, str] | None = None
        self.topic_partition: tuple[str, int] | None = None
        self.fetch_offset = 0

    def size_in_bytes(self) -> int:
        return self._batches.size_in_bytes()

    def has_next(self) -> bool:
        if self._next is None and not self._stopped and self._batches.has_next():
            self._next = self._read_next()
        return self._next is not None

    def next_batch(self):
        batch, self._next = self._next, None
        return batch

    def attach(self, topic: str, partition: int, fetch_offset: int) -> None:
        """Called when the fetcher wraps these records for a partition: name it in reports."""
        self.topic_partition = (topic, partition)
        self.fetch_offset = fetch_offset
        if self._blocked is None:
            blocked_partitions.clear(topic, partition)
        else:
            self._report()

    def _read_next(self):
        start = self._position
        (length,) = struct.unpack_from(">i", self._data, start + _LOG_OVERHEAD - 4)
        end = start + _LOG_OVERHEAD + length
        (base_offset,) = struct.unpack_from(">q", self._data, start)
        try:
            batch = self._batches.next_batch()
        except Exception as exc:  # noqa: BLE001  a batch aiokafka cannot even frame
            return self._block(base_offset, [], _describe(exc))
        self._position = end
        if not batch.validate_crc():
            return self._block(base_offset, [], "the batch's CRC does not match its content")
        try:
            return _ReadBatch(batch, list(batch))
        except Exception as exc:  # noqa: BLE001  whatever the C reader refused (UnicodeDecodeError), retried
            first_error = exc
        if self._data[start + _MAGIC_OFFSET] < 2:
            return self._block(base_offset, [], _describe(first_error))
        records: list[Record] = []
        reader = self.tolerant_batch(memoryview(self._data)[start:end])
        try:
            for record in reader:
                records.append(record)
        except Exception as exc:  # noqa: BLE001
            return self._block(base_offset, records, f"{_describe(first_error)}; read again: {_describe(exc)}")
        log.info("A batch at offset %d held a record aiokafka could not decode (%s); read it tolerantly",
                 base_offset, _describe(first_error))
        return _ReadBatch(batch, records)

    def _block(self, base_offset: int, records: list, reason: str) -> _BlockedBatch:
        self._stopped = True
        stop_at = records[-1].offset + 1 if records else base_offset
        self._blocked = (stop_at, reason)
        if self.topic_partition is not None:
            self._report()
        return _BlockedBatch(records, stop_at, self)

    def _report(self) -> None:
        offset, reason = self._blocked
        topic, partition = self.topic_partition
        blocked_partitions.block(topic, partition, max(offset, self.fetch_offset), reason)
        time.sleep(BLOCKED_RETRY_SECONDS)  # in the consumer's thread: only the blocked fetch waits


def _describe(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


class _AttachingPartitionRecords(_ORIGINAL_PARTITION_RECORDS):
    """aiokafka's PartitionRecords, telling our records which partition they belong to."""

    def __init__(self, tp, records, aborted_transactions, fetch_offset, *args, **kwargs) -> None:
        if isinstance(records, TolerantMemoryRecords):
            records.attach(tp.topic, tp.partition, fetch_offset)
        super().__init__(tp, records, aborted_transactions, fetch_offset, *args, **kwargs)


# ------------------------------------------------------------ installation


def check_aiokafka_version(version: str = aiokafka.__version__) -> None:
    """Refuse an aiokafka this module was not written for: it replaces fetcher internals."""
    if not version.startswith(SUPPORTED_AIOKAFKA):
        raise RuntimeError(
            f"aiokafka {version} is installed, but `app.faust_compat.kafka_record_reader` was written for "
            f"{' or '.join(v + 'x' for v in SUPPORTED_AIOKAFKA)}: check whether it still decodes header names "
            "strictly and how its fetcher reads batches before changing SUPPORTED_AIOKAFKA"
        )


def install(tolerant_batch: type | None = None) -> None:
    """Make every aiokafka consumer in this process read batches through `TolerantMemoryRecords`
    (and read a batch aiokafka refuses with `tolerant_batch`, `_TolerantBatch` unless given)."""
    check_aiokafka_version()
    TolerantMemoryRecords.tolerant_batch = tolerant_batch or _TolerantBatch
    aiokafka_fetcher.MemoryRecords = TolerantMemoryRecords
    aiokafka_fetcher.PartitionRecords = _AttachingPartitionRecords


def installed() -> bool:
    return aiokafka_fetcher.MemoryRecords is TolerantMemoryRecords
