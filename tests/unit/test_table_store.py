"""app.faust_compat.table_store against Faust's own stores: a Faust that reads more of a changelog
event than the fence provides fails here (AttributeError), not in a worker."""

from __future__ import annotations

import faust
import pytest

from app.faust_compat import fixes
from app.faust_compat.table_store import (
    MIB, BoundedRocksDBOptions, apply_to_store, bound_store_memory, changelog_events, estimated_key_count,
    read_in_partition, store_memory,
)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_puts_and_deletes_reach_the_store_with_their_offsets(store, tmp_path):
    app = faust.App("table-store-test", store=store, datadir=str(tmp_path), topic_partitions=2)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2, use_partitioner=True)
    topic = table.changelog_topic.get_topic_name()

    apply_to_store(table, changelog_events(topic, 1, 0, [(b"a", b"1"), (b"b", b"2")]))
    apply_to_store(table, changelog_events(topic, 1, 2, [(b"a", None)]))

    assert table.get(b"b") == b"2"
    assert table.get(b"a") is None
    if store == "rocksdb://":
        assert table.persisted_offset(faust.types.TP(topic, 1)) == 2  # where a recovery would resume


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_key_is_read_from_its_partition_alone(store, tmp_path):
    app = faust.App("table-store-read", store=store, datadir=str(tmp_path), topic_partitions=2)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2, use_partitioner=True)
    topic = table.changelog_topic.get_topic_name()
    apply_to_store(table, changelog_events(topic, 1, 0, [(b"a", b'{"id":"a"}')]))
    apply_to_store(table, changelog_events(topic, 0, 0, [(b"b", b"2")]))

    assert read_in_partition(table, 1, b"a") == table.get(b"a") == b'{"id":"a"}'
    assert read_in_partition(table, 0, b"b") == b"2"
    assert read_in_partition(table, 1, b"missing") is None
    if store == "rocksdb://":  # the memory store keeps one dict for all partitions
        assert read_in_partition(table, 0, b"a") is None  # only the named partition is read
        assert read_in_partition(table, 5, b"a") is None  # a partition with no database here


def test_the_persisted_offset_does_not_pass_records_the_store_never_got(tmp_path):
    """A zombie's held batch lands after rows another worker wrote: applied, but the offset stays below them."""
    app = faust.App("table-store-hole", store="rocksdb://", datadir=str(tmp_path), topic_partitions=2)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2, use_partitioner=True)
    topic = table.changelog_topic.get_topic_name()
    tp0, tp1 = faust.types.TP(topic, 0), faust.types.TP(topic, 1)

    apply_to_store(table, changelog_events(topic, 1, 0, [(b"a", b"1"), (b"b", b"2")]))  # offsets 0, 1
    apply_to_store(table, changelog_events(topic, 1, 7, [(b"z", b"9")]  # 2..6 written by another worker
                                           ) + changelog_events(topic, 0, 0, [(b"c", b"3")]))

    assert table.get(b"z") == b"9" and table.get(b"c") == b"3"
    assert table.persisted_offset(tp1) == 1  # recovery resumes below the other worker's records
    assert table.persisted_offset(tp0) == 0  # no hole there
    apply_to_store(table, changelog_events(topic, 1, 2, [(b"d", b"4")]))
    assert table.persisted_offset(tp1) == 2

    fresh = faust.App("table-store-hole-2", store="rocksdb://", datadir=str(tmp_path / "2"), topic_partitions=2)
    other = fresh.Table("t", key_type=bytes, value_type=bytes, partitions=2, use_partitioner=True)
    apply_to_store(other, changelog_events(topic, 1, 5, [(b"f", b"6")]))  # a fresh store: 0..4 never read
    assert other.get(b"f") == b"6" and other.persisted_offset(tp1) == -1  # recovery reads from the start


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_key_count_of_owned_partitions_without_reading_the_keys(store, tmp_path):
    app = faust.App("table-store-count", store=store, datadir=str(tmp_path), topic_partitions=2)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=2, use_partitioner=True)
    topic = table.changelog_topic.get_topic_name()

    apply_to_store(table, changelog_events(topic, 0, 0, [(b"p0-%d" % i, b"v") for i in range(30)]))
    apply_to_store(table, changelog_events(topic, 1, 0, [(b"p1-%d" % i, b"v") for i in range(70)]))

    if store == "rocksdb://":  # RocksDB's estimate, without the partition's stored changelog offset
        assert estimated_key_count(table, {1}) == 70
        assert estimated_key_count(table, {0, 1}) == 100
        assert estimated_key_count(table, set()) == 0
    else:  # the memory store holds what it was given
        assert estimated_key_count(table, {1}) == 100


def _flushed_store_memory(tmp_path, name: str, bounded: bool) -> dict[str, int]:
    """Memory of a RocksDB table of 1 partition after 160,000 keys went to disk in 8 flushes."""
    app = faust.App(name, store="rocksdb://", datadir=str(tmp_path / name), topic_partitions=1)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=1, use_partitioner=True,
                      options={"write_buffer_size": 8 * MIB, "max_write_buffer_number": 2, "block_cache_size": 8 * MIB})
    if bounded:
        bound_store_memory(table, 16 * MIB)
        assert isinstance(table.data.rocksdb_options, BoundedRocksDBOptions)
    topic = table.changelog_topic.get_topic_name()
    for batch in range(8):
        first = batch * 20_000
        apply_to_store(table, changelog_events(topic, 0, first, [(b"%032d" % i, b"v" * 150)
                                                                for i in range(first, first + 20_000)]))
        fixes.rocksdb_databases(table.data)[0].flush()
    assert table.get(b"%032d" % 12345) == b"v" * 150
    return store_memory(table)


def test_bounded_stores_hold_index_and_filter_blocks_in_the_block_cache(tmp_path):
    """Faust's options keep every file's index and filters outside the cache, growing with the keys;
    the bounded options charge them to the block cache, whose size caps them."""
    faust_default = _flushed_store_memory(tmp_path, "store-memory-faust", bounded=False)
    bounded = _flushed_store_memory(tmp_path, "store-memory-bounded", bounded=True)

    assert set(bounded) == {"memtables", "block_cache", "table_readers"}
    assert faust_default["table_readers"] > 200_000  # the files' index and filters (~2 bytes a key), unbounded
    assert bounded["table_readers"] < faust_default["table_readers"] / 10  # what is left: the files' handles
    assert 0 < bounded["block_cache"] <= 16 * MIB  # the index and filter blocks are in it, under its size


def test_every_partition_of_a_bounded_store_stays_within_one_limit(tmp_path):
    """Eight partitions, each allowed 2 memtables of 4 MiB (64 MiB in all), written in turn with 3x the
    limit and read back: together they hold about the limit, their memtables about half of it.

    RocksDB's limits are soft: a database flushes only when written, so idle partitions keep part-filled
    memtables over the share, and pinned index and filter blocks may take the cache over its capacity."""
    partitions, limit = 8, 16 * MIB
    app = faust.App("store-memory-shared", store="rocksdb://", datadir=str(tmp_path), topic_partitions=partitions)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=partitions, use_partitioner=True,
                      options={"write_buffer_size": 4 * MIB, "max_write_buffer_number": 2})
    bound_store_memory(table, limit)
    topic = table.changelog_topic.get_topic_name()
    value, batch = b"v" * 200, 1_000
    per_partition = 3 * limit // partitions // len(value)
    held = []
    for first in range(0, per_partition, batch):  # in turn, as the agent writes its batches
        for partition in range(partitions):
            apply_to_store(table, changelog_events(topic, partition, first, [
                (b"%d-%09d" % (partition, i), value) for i in range(first, min(first + batch, per_partition))]))
        held.append(store_memory(table))
    for partition in range(partitions):  # reads fill the cache with data blocks
        for i in range(0, per_partition, 7):
            assert table.get(b"%d-%09d" % (partition, i)) == value
    held.append(store_memory(table))

    assert len(fixes.rocksdb_databases(table.data)) == partitions
    assert max(h["memtables"] for h in held) <= limit // 2 * 1.25  # without the shared limit: up to 32 MiB
    assert max(h["memtables"] + h["block_cache"] for h in held) <= limit * 1.2  # the shared cache's capacity
    assert held[-1]["block_cache"] > limit // 4  # the reads' blocks are in it: the cache is used, and shared
    assert max(h["table_readers"] for h in held) < MIB


def test_bounding_a_store_comes_before_its_databases_open(tmp_path):
    app = faust.App("store-bound-late", store="rocksdb://", datadir=str(tmp_path), topic_partitions=1)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=1, use_partitioner=True)
    apply_to_store(table, changelog_events(table.changelog_topic.get_topic_name(), 0, 0, [(b"k", b"v")]))
    with pytest.raises(RuntimeError, match="opened before their options were set"):
        bound_store_memory(table, 16 * MIB)


def test_the_memory_store_has_no_rocksdb_memory(tmp_path):
    app = faust.App("store-memory-none", store="memory://", datadir=str(tmp_path), topic_partitions=1)
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=1)
    bound_store_memory(table, 16 * MIB)  # nothing to bound
    assert store_memory(table) == {}
