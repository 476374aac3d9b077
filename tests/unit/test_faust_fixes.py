"""The commit head check (fix 2) on fake consumer state: never commit past an unacknowledged head."""

from collections import defaultdict
from types import SimpleNamespace

from intervaltree import IntervalTree

from app.faust_compat import fixes as faust_fixes

TP = ("t", 6)


def consumer(committed, acked, gaps=()):
    tree = IntervalTree()
    for begin, end in gaps:
        tree[begin:end] = True
    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, {TP: committed} if committed is not None else {}),
        _acked=defaultdict(list, {TP: list(acked)}),
        _acked_index=defaultdict(set, {TP: set(acked)}),
        _gap=defaultdict(IntervalTree, {TP: tree}),
    )


def new_offset(fake, start=None):
    faust_fixes._start_offsets.clear()
    if start is not None:
        faust_fixes._start_offsets[TP] = start
    return faust_fixes._new_offset_without_head_gap(fake, TP)


def test_an_uncommitted_partition_does_not_commit_past_its_unacknowledged_first_message():
    # Seen in the two-worker test: offset 0 never processed, 1.. acknowledged, committed None.
    assert new_offset(consumer(None, [1, 2, 3]), start=0) is None
    assert new_offset(consumer(None, [0, 1, 2, 3]), start=0) == 4


def test_a_partition_starting_after_retention_starts_there():
    assert new_offset(consumer(None, [120, 121]), start=120) == 122
    assert new_offset(consumer(None, [121]), start=120) is None


def test_a_committed_partition_waits_for_the_committed_offset_even_one_message_away():
    assert new_offset(consumer(31, [32, 33])) is None
    assert new_offset(consumer(31, [31, 32, 33])) == 34


def test_a_known_gap_at_the_head_is_not_waited_for():
    assert new_offset(consumer(10, [12, 13], gaps=[(10, 12)])) == 14
