"""Fix 4 of `app.faust_compat.fixes`: a partition stalled behind a message never processed is read again.

A message skipped in a rebalance, or dropped from the buffer of an agent that
crashed, is not always fetched again, and its partition's committed offset then
stays behind it for good. The timer seeks such a partition back to its committed
offset; re-reading is harmless, the writes are idempotent.
"""

from __future__ import annotations

import logging
import time

import faust

from app.domain.partition_progress import PartitionProgress
from app.faust_compat.fixes import committed_offsets
from app.observability import metrics

log = logging.getLogger(__name__)
STALL_SECONDS = 5.0


class StallDetector:
    """Partitions whose committed offset lags the end and has not moved while the agent idled."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.last_progress = time.monotonic()
        self._writing = False
        self._seen: dict = {}

    def writing(self, active: bool) -> None:
        """While a batch is being written the agent is not idle, however long it takes (PostgreSQL away, say)."""
        self._writing = active

    def progressed(self) -> None:
        """A batch was written and acknowledged."""
        self.last_progress = time.monotonic()

    def reset(self) -> None:
        """Forget what was seen: a stall must be observed anew (after a rebalance)."""
        self.progressed()
        self._seen = {}

    def stalled(self, committed: dict, ends: dict) -> dict:
        """tp -> committed offset to seek back to."""
        idle = not self._writing and time.monotonic() - self.last_progress >= self.idle_seconds
        stalled = {
            tp: offset for tp, offset in committed.items()
            if idle and offset is not None and ends.get(tp, 0) > offset and self._seen.get(tp) == offset
        }
        self._seen = dict(committed)
        return stalled


def resume_stalled_partitions(app: faust.App, topic: str, idle_seconds: float = STALL_SECONDS,
                              report_after_seconds: float = 120.0) -> StallDetector:
    """Start the timer on `app`; the caller reports progress with `progressed()` on the returned detector.

    The same timer exports how long each partition has gone without progress
    while behind (`timestamp_partition_stall_seconds`, and `timestamp_partition_stalled`
    past `report_after_seconds`, PARTITION_STALL_SECONDS), which no seek back cures.
    """
    stalls = StallDetector(idle_seconds)
    progress = PartitionProgress()

    @app.timer(interval=idle_seconds)
    async def resume_stalled_partitions() -> None:
        """Seek a partition stuck behind a message that was never processed back to its committed offset."""
        if not app.flow_control.is_active():
            # A rebalance is under way: committed offsets are not known yet and its
            # own seek comes later. Judge stalls afresh once it is over.
            stalls.reset()
            progress.reset()
            return
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == topic]
        committed_by_tp = committed_offsets(app.consumer)
        committed = {tp: committed_by_tp.get(tp) or 0 for tp in assigned}
        ends = app.monitor.tp_end_offsets
        stuck = progress.observe({tp.partition: o for tp, o in committed.items()},
                                 {tp.partition: ends.get(tp, 0) for tp in assigned}, time.monotonic())
        metrics.record_partition_progress(topic, stuck, report_after_seconds)
        for tp, offset in stalls.stalled(committed, app.monitor.tp_end_offsets).items():
            log.warning("Partition %s[%d] stalled at offset %d; reading it again from there",
                        tp.topic, tp.partition, offset)
            await app.consumer.seek(tp, offset)

    return stalls
