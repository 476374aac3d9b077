"""A Faust table's local store, written the way its recovery writes it (`Table.apply_changelog_batch`).

The agent writes the table's changelog itself, a Kafka batch per partition
(tables.changelog_batch_writer), then hands the records to the store with the
method recovery uses, persisted offsets included. That method reads, of each
event, `key`, `value` and `message.{topic, partition, offset, tp}` (faust 0.15's
`Store.apply_changelog_batch` for the memory and RocksDB stores);
`tests.unit.test_table_store` fails when a Faust upgrade reads more.

It also opens the store's RocksDB databases within one memory limit
(`bound_store_memory`) and reports what they hold (`store_memory`).
"""

from __future__ import annotations

import errno
from typing import Iterable, NamedTuple, Sequence

import rocksdict
from faust.stores.rocksdb import RocksDBOptions, Store as RocksDBStore
from faust.types import TP

from app.faust_compat import fixes


MIB = 1024 * 1024


class ChangelogMessage(NamedTuple):
    """What a store's `apply_changelog_batch` reads of a changelog message."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes | None
    tp: TP


class ChangelogEvent(NamedTuple):
    """What a store's `apply_changelog_batch` reads of a changelog event."""

    key: bytes
    value: bytes | None
    message: ChangelogMessage


def changelog_events(topic: str, partition: int, first_offset: int,
                     items: Sequence[tuple[bytes, bytes | None]]) -> list[ChangelogEvent]:
    """The events of `items` written at consecutive offsets from `first_offset`."""
    tp = TP(topic, partition)
    return [ChangelogEvent(key, value, ChangelogMessage(topic, partition, offset, key, value, tp))
            for offset, (key, value) in enumerate(items, first_offset)]


class BoundedRocksDBOptions(RocksDBOptions):
    """Faust's RocksDB options, with every partition's store held within one memory limit for the table.

    Faust gives each partition's database (active or standby) its own block cache
    and memtables, and keeps every SST file's index and filter blocks outside the
    cache (rocksdict's defaults): a worker's memory then grows with the partitions
    it holds, and with the keys each ever held (about 2 bytes a key, no bound).
    Here all of them share one block cache of `memory_limit` bytes. The index and
    filter blocks are charged to it (partitioned, so a GET reads the small pieces
    it needs; only the top levels, and those of the newest files, stay pinned),
    and so are the memtables, through a write buffer manager that flushes them
    once they reach half the limit: what the stores hold stays within the limit
    however many partitions the worker holds and however long the table's history.
    """

    MEMTABLE_SHARE = 0.5  # the rest of the cache is for the blocks GETs read, and the index and filters

    def __init__(self, memory_limit: int, **options) -> None:
        super().__init__(**options)
        self.block_cache = rocksdict.Cache(memory_limit)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            int(memory_limit * self.MEMTABLE_SHARE), False, self.block_cache)  # False: flush early, never stall

    def as_options(self):
        options = super().as_options()
        if self.use_rocksdict:
            options.set_block_based_table_factory(self.block_based_table())
            options.set_write_buffer_manager(self.write_buffers)
        return options

    def block_based_table(self) -> rocksdict.BlockBasedOptions:
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self.block_cache)
        table.set_bloom_filter(self.bloom_filter_size, False)  # full filters (partitioned ones need them)
        table.set_index_type(rocksdict.BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        return table


def bound_store_memory(table, memory_limit: int) -> None:
    """Open the table's RocksDB databases with `BoundedRocksDBOptions` (before the worker opens any).

    Faust builds its options from the table's `options` in the store's constructor
    and opens each partition's database with them (`Store.rocksdb_options.open`);
    `tests.unit.test_table_store` fails when a Faust upgrade opens them otherwise.
    """
    store = table.data
    if not isinstance(store, RocksDBStore) or isinstance(store.rocksdb_options, BoundedRocksDBOptions):
        return
    if fixes.rocksdb_databases(store):
        raise RuntimeError(f"table {table.name}: its RocksDB databases were opened before their options were set")
    store.rocksdb_options = BoundedRocksDBOptions(memory_limit, **store.options, use_rocksdict=store.use_rocksdict)


def store_memory(table) -> dict[str, int]:
    """Bytes RocksDB holds for the table in this worker, every open partition (active and standby)
    together, by part; empty for the memory store. The parts add up to what the stores hold:
    `memtables`, `block_cache` (the shared cache less what the memtables are charged in it: data,
    index and filter blocks), `table_readers` (what each open file keeps outside the cache)."""
    store = table.data
    if not isinstance(store, RocksDBStore):
        return {}
    databases = list(fixes.rocksdb_databases(store).values())
    memtables = sum(db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0 for db in databases)
    readers = sum(db.property_int_value("rocksdb.estimate-table-readers-mem") or 0 for db in databases)
    options = store.rocksdb_options
    if isinstance(options, BoundedRocksDBOptions):
        blocks = max(0, options.block_cache.get_usage() - options.write_buffers.get_usage())
    else:  # Faust's own options: a cache per database
        blocks = sum(db.property_int_value("rocksdb.block-cache-usage") or 0 for db in databases)
    return {"memtables": memtables, "block_cache": blocks, "table_readers": readers}


class TableStoreUnwritable(OSError):
    """The table's local store refused a write: its disk is full, or another I/O error. No message's fault.

    An OSError (errno ENOSPC when the disk is full), so that the write policy
    retries it as the outage it is (app.sink.batch_writer) instead of isolating
    a message. Nothing of the write is lost: the changelog has the records, and
    a retry (or a restart's recovery) puts them in the store again.
    """

    @property
    def disk_full(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


ROCKSDB_IO_ERROR = "IO error:"  # RocksDB Status::IOError's text; rocksdict raises it as a bare Exception
NO_SPACE = ("No space left on device", "Disk quota exceeded")


def store_write_error(exc: BaseException) -> TableStoreUnwritable | None:
    """`exc` as a TableStoreUnwritable when it is the store's I/O failure (not a bug or a bad value)."""
    if isinstance(exc, TableStoreUnwritable):
        return exc
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError):
        code = exc.errno
    elif text.startswith(ROCKSDB_IO_ERROR):
        code = errno.ENOSPC if any(n in text for n in NO_SPACE) else errno.EIO
    else:
        return None
    return TableStoreUnwritable(code, text[:300] or type(exc).__name__)


def apply_to_store(table, events: Sequence[ChangelogEvent]) -> None:
    """Put the events in the table's local store, as recovery does (a None value deletes the key).

    Raises TableStoreUnwritable when the store cannot write (a full disk). The
    events' partitions may then be written in part; writing them again is
    idempotent, and the persisted offsets are only written after all of them.
    """
    try:
        table.apply_changelog_batch(offsets_kept_below_holes(table, events))
    except Exception as exc:
        unwritable = store_write_error(exc)
        if unwritable is None:
            raise
        raise unwritable from exc


def offsets_kept_below_holes(table, events: Sequence[ChangelogEvent]) -> Sequence[ChangelogEvent]:
    """The events, those of a partition whose changelog has records the store never got given its
    persisted offset instead, so that the store's persisted offset does not pass those records.

    A store keeps the changelog offset it last applied (RocksDB's `persisted_offset`,
    where recovery resumes). Normally this worker is the partition's only writer, so
    its next batch starts right after that offset. One that starts further on
    follows records another worker wrote: a worker frozen past its session timeout
    (a zombie) wakes up and writes its held batch after the rows the partition's new
    owner wrote meanwhile. Were the offset moved past them, a recovery of the
    partition here would start after them and the table would lack those rows.
    The records are applied; only the offset stays, until the partition's next
    recovery reads from it. The memory store keeps no offset (its recovery reads all).
    """
    store = table.data
    if not isinstance(store, RocksDBStore):  # no persisted offsets
        return events
    first: dict[TP, int] = {}
    for event in events:
        tp, offset = event.message.tp, event.message.offset
        if offset < first.get(tp, offset + 1):
            first[tp] = offset
    kept: dict[TP, int] = {}
    for tp, offset in first.items():
        persisted = store.persisted_offset(tp)
        previous = -1 if persisted is None else persisted  # -1: Faust's recovery then reads from the start
        if offset > previous + 1:
            kept[tp] = previous
    if not kept:
        return events
    return [_at_offset(event, kept[event.message.tp]) if event.message.tp in kept else event for event in events]


def _at_offset(event: ChangelogEvent, offset: int) -> ChangelogEvent:
    m = event.message
    return ChangelogEvent(event.key, event.value, ChangelogMessage(m.topic, m.partition, offset, m.key, m.value, m.tp))


def read_in_partition(table, partition: int, key: bytes) -> bytes | None:
    """A key's value in the table's local store, read from its partition's database alone; None if absent.

    For a table with `use_partitioner=True` a key lives in one partition's database,
    the one its partitioner names. Faust's read tries each open database in turn (a
    bloom-filter probe each, and an LRU index of keys) since it does not know the
    partition; a GET does. Keys and values are the table's raw bytes.
    """
    store = table.data
    if not isinstance(store, RocksDBStore):
        return store.get(key)
    database = fixes.rocksdb_databases(store).get(partition)
    return None if database is None else database.get(key)


def estimated_key_count(table, partitions: Iterable[int]) -> int:
    """Keys of these partitions in the table's local store, without reading them.

    Counting a RocksDB store key by key (`len(table)`) takes time in proportion to
    the table's history, on the event loop, at every scrape. RocksDB's own
    estimate (`rocksdb.estimate-num-keys`) is read instead: it may count an
    overwritten or deleted key until compaction. Faust keeps the partition's
    changelog offset under `offset_key` in the same database; it is not counted.
    The memory store's count is exact and cheap.
    """
    store = table.data
    if not isinstance(store, RocksDBStore):
        return len(table)
    databases = fixes.rocksdb_databases(store)
    wanted = set(partitions)
    total = 0
    for partition, database in list(databases.items()):
        if partition in wanted:
            estimate = database.property_int_value("rocksdb.estimate-num-keys") or 0
            total += max(0, estimate - (database.get(store.offset_key) is not None))
    return total
