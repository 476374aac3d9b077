"""Each Faust fix on fake consumer state (app/faust_compat/fixes.py), and the start-up checks."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.types import TP as TopicPartition
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


# Fix 5: a gap folded into the acknowledged offsets does not repeat them.

def test_a_gap_over_acknowledged_offsets_commits_in_one_step():
    # Seen in the chaos run: partition 3 committed 721, 722, 723, ... one offset per commit interval.
    fake = consumer(721, range(721, 1351), gaps=[(721, 1351)])
    assert new_offset(fake) == 1351
    assert fake._acked[TP] == [] and not fake._gap[TP]


def test_a_gap_still_counts_its_offsets_that_were_never_acknowledged():
    fake = consumer(10, [10, 11, 15], gaps=[(12, 16)])
    assert new_offset(fake) == 16
    fake = consumer(10, [10, 11, 16], gaps=[(13, 16)])  # 12 neither acknowledged nor skipped: stop there
    assert new_offset(fake) == 12
    assert 12 not in fake._acked_index[TP] and fake._acked[TP] == [13, 14, 15, 16]


def test_an_acknowledgement_after_the_gap_was_folded_is_not_counted_twice():
    fake = consumer(5, [5, 9], gaps=[(6, 10)])
    faust_fixes._fold_gaps_without_duplicates(fake, TP)
    assert sorted(fake._acked[TP]) == [5, 6, 7, 8, 9] and fake._acked_index[TP] == {5, 6, 7, 8, 9}


def test_faust_itself_still_repeats_acknowledged_offsets_of_a_gap():
    """When this fails, Faust folds gaps without duplicates itself: fix 5 can go."""
    fake = consumer(721, range(721, 1351), gaps=[(721, 1351)])
    assert faust_fixes._original_new_offset(fake, TP) == 722


# Fix 0: only stream.ack acknowledges.

def test_the_stream_never_enables_its_own_acks():
    stream = faust_fixes.ManualAckStream.__new__(faust_fixes.ManualAckStream)
    stream.enable_acks = True  # what noack_take's finally does, possibly late
    assert stream.enable_acks is False


# Fix 1: acknowledgements of a past generation, or during a rebalance, release without counting.

class Message:
    def __init__(self, generation_id: int) -> None:
        self.generation_id, self.acked = generation_id, False


def ack_consumer(generation=3, active=True):
    app = SimpleNamespace(consumer_generation_id=generation,
                          flow_control=SimpleNamespace(is_active=lambda: active))
    return SimpleNamespace(app=app, _unacked_messages=set(), _waiting_for_ack=None)


@pytest.fixture
def counted_acks(monkeypatch):
    counted = []
    monkeypatch.setattr(faust_fixes, "_original_ack", lambda consumer, message: counted.append(message) or True)
    return counted


def test_an_ack_of_the_current_generation_counts(counted_acks):
    consumer, message = ack_consumer(), Message(generation_id=3)
    assert faust_fixes._ack_processed_only(consumer, message) is True
    assert counted_acks == [message]


@pytest.mark.parametrize("generation, active", [(2, True), (3, False)])
def test_an_ack_of_a_past_generation_or_during_a_rebalance_is_released_but_not_counted(counted_acks, generation,
                                                                                          active):
    consumer = ack_consumer(generation=3, active=active)
    message = Message(generation_id=generation)
    consumer._unacked_messages.add(message)
    assert faust_fixes._ack_processed_only(consumer, message) is False
    assert message.acked is True
    assert consumer._unacked_messages == set()
    assert counted_acks == []


# Fix 3: a partition without a commit starts at its earliest offset.

async def test_uncommitted_partitions_are_sought_to_their_earliest_offset(monkeypatch):
    async def faust_seek(consumer):
        consumer.sought.append("faust")

    monkeypatch.setattr(faust_fixes, "_original_perform_seek", faust_seek)
    faust_fixes._start_offsets.clear()
    committed, uncommitted, other = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("no-acks", 0)

    async def earliest_offsets(*tps):
        return {tp: 40 for tp in tps}

    async def seek(tp, offset):
        fake.sought.append((tp, offset))

    fake = SimpleNamespace(
        sought=[],
        assignment=lambda: {committed, uncommitted, other},
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == "t")),
        _committed_offset={committed: 12},
        earliest_offsets=earliest_offsets,
        seek=seek,
    )
    await faust_fixes._perform_seek_from_start_when_uncommitted(fake)
    assert fake.sought == ["faust", (uncommitted, 40)]
    assert faust_fixes._start_offsets == {uncommitted: 40}
    faust_fixes._start_offsets.clear()


# The start-up checks: a Faust the fixes were not written for stops the worker.

def test_the_installed_stream_iterator_is_one_the_fixes_were_written_for():
    assert faust_fixes.check_stream_iterator() == faust_fixes.stream_iterator()


def test_an_unknown_stream_iterator_is_refused():
    class StreamIterator:
        pass

    with pytest.raises(RuntimeError, match="re-check fixes 0 and 1"):
        faust_fixes.check_stream_iterator(cython_iterator=StreamIterator)


def test_a_stream_without_the_known_iteration_methods_is_refused():
    class Stream:
        async def _c_aiter(self):
            pass

    with pytest.raises(RuntimeError, match="_py_aiter"):
        faust_fixes.check_stream_iterator(stream_class=Stream)
