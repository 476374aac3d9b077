"""Whether a partition moves: the worker's tracker and the audit's one-shot rule."""

from __future__ import annotations

import pytest

from app.domain.partition_progress import PartitionProgress, stalled_in_audit
from app.ops.audit import find_stalls


def test_a_partition_behind_without_progress_accumulates_seconds():
    progress = PartitionProgress()
    assert progress.observe({0: 5, 1: 10}, {0: 9, 1: 10}, now=100) == {0: 0.0, 1: 0.0}
    assert progress.observe({0: 5, 1: 10}, {0: 9, 1: 12}, now=130) == {0: 30.0, 1: 0.0}
    assert progress.observe({0: 6, 1: 10}, {0: 9, 1: 12}, now=140) == {0: 0.0, 1: 10.0}  # 0 moved
    assert progress.observe({0: 9, 1: 10}, {0: 9, 1: 12}, now=150) == {0: 0.0, 1: 20.0}  # 0 caught up
    progress.reset()
    assert progress.observe({1: 10}, {1: 12}, now=160) == {1: 0.0}  # judged afresh after a rebalance


def test_the_audit_calls_stalled_only_behind_old_and_unmoved():
    before, ends = {0: 5, 1: 5, 2: 5, 3: 9}, {0: 9, 1: 9, 2: 9, 3: 9}
    after = {0: 5, 1: 6, 2: 5, 3: 9}
    ages = {0: 300.0, 1: 300.0, 2: 10.0}
    assert stalled_in_audit(before, after, ends, ages, 120) == {0: 300.0}


class FakeView:
    topic = "t"

    def __init__(self, committed_twice, ends, stamps):
        self._committed = list(committed_twice)
        self._ends, self._stamps = ends, stamps
        self.asked_heads = None

    async def committed(self, group, partitions):
        return self._committed.pop(0)

    async def log_starts(self, partitions):
        return {p: 0 for p in partitions}

    async def end_offsets(self, partitions):
        return self._ends

    async def head_timestamps(self, heads):
        self.asked_heads = heads
        return {p: self._stamps[p] for p in heads}


async def test_find_stalls_watches_only_when_a_partition_is_a_candidate():
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    view = FakeView([{0: 3, 1: None}, {0: 3, 1: None}], {0: 5, 1: 2}, {0: 1_000_000, 1: 1_000_000})
    report = await find_stalls(view, "g", [0, 1], 120, 10, now_ms=lambda: 1_000_000 + 500_000, sleep=sleep)
    assert view.asked_heads == {0: (3, 5), 1: (0, 2)}  # never committed: its head is the log start
    assert slept == [10] and set(report.stalled) == {0, 1}
    assert report.stalled[0] == {"committed": 3, "end": 5, "head_age_seconds": 500.0}
    assert "partition 0 STALLED" in report.lines()[0]

    fresh = FakeView([{0: 3}, {0: 3}], {0: 5}, {0: 1_000_000})
    slept.clear()
    report = await find_stalls(fresh, "g", [0], 120, 10, now_ms=lambda: 1_000_000 + 5_000, sleep=sleep)
    assert report.stalled == {} and slept == []  # a young head: no wait, nothing stalled


@pytest.mark.parametrize("moved", [True, False])
async def test_a_commit_during_the_watch_clears_the_candidate(moved):
    async def sleep(seconds):
        pass

    view = FakeView([{0: 3}, {0: 4 if moved else 3}], {0: 5}, {0: 0})
    report = await find_stalls(view, "g", [0], 120, 1, now_ms=lambda: 10_000_000, sleep=sleep)
    assert (0 in report.stalled) is not moved
