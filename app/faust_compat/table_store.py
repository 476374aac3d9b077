"""A Faust table's local store, written the way its recovery writes it (`Table.apply_changelog_batch`).

The agent writes the table's changelog itself, a Kafka batch per partition
(tables.changelog_batch_writer), then hands the records to the store with the
method recovery uses, persisted offsets included. That method reads, of each
event, `key`, `value` and `message.{topic, partition, offset, tp}` (faust 0.15's
`Store.apply_changelog_batch` for the memory and RocksDB stores);
`tests.unit.test_table_store` fails when a Faust upgrade reads more.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

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
