"""The offset audit: runs, gaps, windows, the report, the gauge, and reading ranges from a fake log."""

from types import SimpleNamespace

import pytest

from app.observability import metrics
from app.ops.audit import (
    AuditError,
    AuditReport,
    KafkaView,
    PartitionAudit,
    append_offset,
    gaps,
    isolation_level,
    missing_ranges,
    runs,
    window,
)


@pytest.mark.parametrize(
    ("offsets", "expected"),
    [
        ([], []),
        ([7], [(7, 8)]),
        ([3, 4, 5, 9], [(3, 6), (9, 10)]),
        ([0, 2, 4], [(0, 1), (2, 3), (4, 5)]),
        (range(100, 200), [(100, 200)]),
    ],
)
def test_runs_of_sorted_offsets(offsets, expected):
    assert runs(offsets) == expected


def test_append_offset_extends_the_last_run_or_starts_one():
    found = []
    for offset in (5, 6, 8):
        append_offset(found, offset)
    assert found == [(5, 7), (8, 9)]


@pytest.mark.parametrize(
    ("offsets", "lo", "hi", "expected"),
    [
        (range(0, 130), 0, 130, []),  # complete
        ([*range(0, 120), *range(125, 130)], 0, 130, [(120, 125)]),  # one hole
        ([], 0, 5, [(0, 5)]),  # no row at all
        (range(3, 10), 0, 10, [(0, 3)]),  # head missing
        (range(0, 7), 0, 10, [(7, 10)]),  # tail missing
        ([1, 3, 5], 0, 6, [(0, 1), (2, 3), (4, 5)]),  # single offsets
        ([0, 1, 2, 50, 51], 10, 52, [(10, 50)]),  # rows outside the window do not count
        (range(0, 10), 5, 5, []),  # empty window
    ],
)
def test_missing_ranges_within_the_window(offsets, lo, hi, expected):
    assert missing_ranges(offsets, lo, hi) == expected


def test_gaps_clip_runs_that_straddle_the_window():
    assert gaps([(0, 12), (15, 40)], 10, 20) == [(12, 15)]
    assert gaps([(0, 100)], 10, 20) == []
    assert gaps([(30, 40)], 10, 20) == [(10, 20)]


@pytest.mark.parametrize(
    ("committed", "log_start", "size", "expected"),
    [
        (130, 0, None, (0, 130)),  # the CLI: everything retained
        (130, 40, None, (40, 130)),  # below the log start: deleted by retention, not a gap
        (500_000, 0, 100_000, (400_000, 500_000)),  # the worker: the last `size` offsets
        (50, 0, 100_000, (0, 50)),  # fewer offsets than the window
        (500, 450, 100, (450, 500)),  # log start inside the window
        (None, 7, 100, (7, 7)),  # never committed: nothing to audit
        (30, 40, None, (30, 30)),  # retention passed the committed offset
    ],
)
def test_window_bounds(committed, log_start, size, expected):
    assert window(committed, log_start, size) == expected


def test_isolation_follows_the_processing_guarantee():
    assert isolation_level("exactly_once") == "read_committed"
    assert isolation_level("at_least_once") == "read_uncommitted"


def report() -> AuditReport:
    return AuditReport("timestamp.command.v1", "timestamp-pipeline", [
        PartitionAudit(0, 1200, 0, (0, 1200), 1200),
        PartitionAudit(1, None, 0, (0, 0), 0),
        PartitionAudit(3, 130, 0, (0, 130), 124, [(120, 125), (127, 128)]),
    ])


def test_report_table_lists_every_range_and_the_total():
    lines = report().lines()
    assert lines[0] == "offset audit of timestamp.command.v1, consumer group timestamp-pipeline"
    assert lines[1].split() == ["partition", "committed", "log", "start", "rows", "missing"]
    assert lines[2].split() == ["0", "1200", "0", "1200", "0"]
    assert lines[3].split() == ["1", "-", "0", "0", "0"]
    assert lines[4].split() == ["3", "130", "0", "124", "6"]
    assert "3: [120, 125) 5 messages" in lines
    assert "3: [127, 128) 1 message" in lines
    assert lines[-1] == "total: 6 messages missing in 2 ranges"
    assert report().ranges() == {3: [(120, 125), (127, 128)]}


def test_clean_report():
    clean = AuditReport("t", "g", [PartitionAudit(0, 10, 0, (0, 10), 10)])
    assert clean.missing == 0 and clean.ranges() == {} and clean.committed_any
    assert clean.lines()[-1] == "total: 0 messages missing in 0 ranges"
    assert not AuditReport("t", "g", [PartitionAudit(0, None, 0, (0, 0), 0)]).committed_any


def test_report_as_json():
    data = report().as_dict()
    assert data["missing"] == 6
    assert data["partitions"][2] == {"partition": 3, "committed": 130, "log_start": 0, "window": [0, 130],
                                     "rows": 124, "missing": 6, "gaps": [[120, 125], [127, 128]]}


def samples() -> dict[str, float]:
    return {s.labels["partition"]: s.value for s in metrics.audit_gap_messages.collect()[0].samples}


def test_gauge_keeps_only_the_partitions_last_audited():
    metrics.record_audit("unit.topic", {0: 0, 3: 5})
    assert samples() == {"0": 0, "3": 5}
    metrics.record_audit("unit.topic", {3: 2, 4: 0})  # partition 0 moved to another worker
    assert samples() == {"3": 2, "4": 0}
    metrics.forget_audit_partitions("unit.topic", [4])  # a failed run after a rebalance
    assert samples() == {"4": 0}
    assert metrics.audit_last_success.collect()[0].samples[0].value > 0
    metrics.forget_audit_partitions("unit.topic", [])


class FakeConsumer:
    """A partition log for KafkaView.record_runs: fetches `batch` records; holes (markers) are skipped."""

    def __init__(self, offsets, end: int, batch: int = 4, stuck: bool = False) -> None:
        self.offsets, self.end, self.batch, self.stuck = sorted(offsets), end, batch, stuck
        self.pos, self.seeks = 0, []

    def assign(self, tps) -> None:
        pass

    def seek(self, tp, offset: int) -> None:
        self.seeks.append(offset)
        self.pos = offset

    async def getmany(self, tp, timeout_ms: int, max_records: int | None = None):
        if self.stuck:
            return {}
        records = [o for o in self.offsets if o >= self.pos][: self.batch]
        later = [o for o in self.offsets if records and o > records[-1]]
        self.pos = later[0] if later else self.end
        return {tp: [SimpleNamespace(offset=o) for o in records]}

    async def position(self, tp) -> int:
        return self.pos


def view(consumer: FakeConsumer) -> KafkaView:
    kafka = KafkaView.__new__(KafkaView)  # no real clients: nothing to connect to
    kafka.topic, kafka._consumer = "t", consumer
    return kafka


async def test_record_runs_drop_offsets_without_a_record_and_seek_only_to_far_ranges():
    log = FakeConsumer([o for o in range(2000) if o not in (1, 1001)], end=2000)
    assert await view(log).record_runs(0, [(0, 3), (10, 12), (1000, 1002)]) == [(0, 1), (2, 3), (10, 12), (1000, 1001)]
    assert log.seeks == [0, 1000]  # [10, 12) was read through, [1000, 1002) is too far for that


async def test_record_runs_of_a_range_without_any_record():
    log = FakeConsumer(range(0, 5), end=9)  # 5-8: markers at the end of the log
    assert await view(log).record_runs(0, [(5, 9)]) == []


async def test_record_runs_give_up_when_kafka_makes_no_progress():
    kafka = view(FakeConsumer(range(10), end=10, stuck=True))
    kafka.IDLE_POLLS = 3
    with pytest.raises(AuditError, match=r"no progress reading t\[0\] at offset 4"):
        await kafka.record_runs(0, [(4, 6)])
