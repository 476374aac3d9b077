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

    apply_to_store(table, changelog_events(topic, 1, 40, [(b"a", b"1"), (b"b", b"2")]))
    apply_to_store(table, changelog_events(topic, 1, 42, [(b"a", None)]))

    assert table.get(b"b") == b"2"
    assert table.get(b"a") is None
    if store == "rocksdb://":
        assert table.persisted_offset(faust.types.TP(topic, 1)) == 42  # where a recovery would resume


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
