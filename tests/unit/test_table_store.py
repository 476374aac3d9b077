"""app.faust_compat.table_store against Faust's own stores: a Faust that reads more of a changelog
event than the fence provides fails here (AttributeError), not in a worker."""

from __future__ import annotations

import faust
import pytest

from app.faust_compat.table_store import apply_to_store, changelog_events, estimated_key_count


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
