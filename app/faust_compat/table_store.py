"""A Faust table's local store, written the way its recovery writes it (`Table.apply_changelog_batch`).

The agent writes the table's changelog itself, a Kafka batch per partition
(tables.changelog_batch_writer), then hands the records to the store with the
method recovery uses, persisted offsets included. That method reads, of each
event, `key`, `value` and `message.{topic, partition, offset, tp}` (faust 0.15's
`Store.apply_changelog_batch` for the memory and RocksDB stores);
`tests.unit.test_table_store` fails when a Faust upgrade reads more.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

from faust.types import TP


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


def apply_to_store(table, events: Sequence[ChangelogEvent]) -> None:
    """Put the events in the table's local store, as recovery does (a None value deletes the key)."""
    table.apply_changelog_batch(events)


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
    databases = getattr(store, "_dbs", None)  # faust.stores.rocksdb.Store: partition -> open database
    if databases is None:
        return len(table)
    wanted = set(partitions)
    total = 0
    for partition, database in list(databases.items()):
        if partition in wanted:
            estimate = database.property_int_value("rocksdb.estimate-num-keys") or 0
            total += max(0, estimate - (database.get(store.offset_key) is not None))
    return total
