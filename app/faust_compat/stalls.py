"""Fix 4 of `app.faust_compat.fixes`: a partition stalled behind a message never processed is read again.

A message skipped in a rebalance, or dropped from the buffer of an agent that
crashed, is not always fetched again, and its partition's committed offset then
stays behind it for good. A partition can also be left out of the fetch
altogether (Faust pauses every partition during a rebalance and resumes them
when table recovery completes; a recovery cut short by another rebalance has
been seen to leave one unfetched, with no error). The timer resumes fetching
such a partition and seeks it back to its committed offset; re-reading is
harmless, the writes are idempotent.

End offsets come from the broker, not from what the fetcher last saw: a
partition that is not fetched never shows the fetcher a new end.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust

from app.domain.partition_progress import PartitionProgress
from app.faust_compat.fixes import committed_offsets
from app.observability import metrics

log = logging.getLogger(__name__)
STALL_SECONDS = 5.0
STARVED_SECONDS = 30.0


class StallDetector:
    """Partitions whose committed offset lags the end and stays put.

    Stalled: behind, seen at the same committed offset at two looks or more,
    no batch being written, and either the agent idled (nothing acknowledged
    for `idle_seconds`) or the partition has not moved for `starved_seconds`
    (the agent works, but not on this partition: it is not being delivered).
    """

    def __init__(self, idle_seconds: float, starved_seconds: float = STARVED_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self.starved_seconds = starved_seconds
        self.last_progress = time.monotonic()
        self._writing = False
        self._still: dict = {}  # tp -> (committed offset, since when it has stayed there while behind)

    def writing(self, active: bool) -> None:
        """While a batch is being written the agent is not idle, however long it takes (PostgreSQL away, say)."""
        self._writing = active

    def progressed(self) -> None:
        """A batch was written and acknowledged."""
        self.last_progress = time.monotonic()

    def reset(self) -> None:
        """Forget what was seen: a stall must be observed anew (after a rebalance)."""
        self.progressed()
        self._still = {}

    def stalled(self, committed: dict, ends: dict, now: float | None = None) -> dict:
        """tp -> committed offset to seek back to."""
        now = time.monotonic() if now is None else now
        idle = not self._writing and now - self.last_progress >= self.idle_seconds
        stalled, still = {}, {}
        for tp, offset in committed.items():
            if offset is None or ends.get(tp, 0) <= offset:
                continue
            seen = self._still.get(tp)
            if seen is None or seen[0] != offset:
                still[tp] = (offset, now)  # first look at this offset: nothing to compare yet
                continue
            still[tp] = seen
            if idle or (not self._writing and now - seen[1] >= self.starved_seconds):
                stalled[tp] = offset
                still[tp] = (offset, now)  # starved again only after another full wait
        self._still = still
        return stalled


class BrokerEndOffsets:
    """End offsets asked of the broker, one question at a time.

    When the broker does not answer within `timeout`, the answer is what the
    fetcher last saw, and the question stays the one in flight: a broker that
    is away gets one outstanding request from this timer, not one per tick.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._asking: asyncio.Future | None = None

    async def get(self, assigned: list, timeout: float) -> dict:
        """tp -> end offset of each of `assigned`."""
        if not assigned:
            return {}
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self.app.consumer.highwaters(*assigned))
        done, _ = await asyncio.wait({self._asking}, timeout=timeout)
        if done and not self._asking.exception():
            return dict(self._asking.result())
        if done:
            log.debug("End offsets from the broker failed (%r); using the fetcher's", self._asking.exception())
        return {tp: self.app.monitor.tp_end_offsets.get(tp, 0) for tp in assigned}


def resume_stalled_partitions(app: faust.App, topic: str, idle_seconds: float = STALL_SECONDS,
                              report_after_seconds: float = 120.0,
                              starved_seconds: float = STARVED_SECONDS) -> StallDetector:
    """Start the timer on `app`; the caller reports progress with `progressed()` on the returned detector.

    The same timer exports how long each partition has gone without progress
    while behind (`timestamp_partition_stall_seconds`, and `timestamp_partition_stalled`
    past `report_after_seconds`, PARTITION_STALL_SECONDS), which no seek back cures.
    """
    stalls = StallDetector(idle_seconds, starved_seconds)
    progress = PartitionProgress()
    end_offsets = BrokerEndOffsets(app)

    def settled() -> bool:
        """No rebalance or table recovery under way: during one, partitions are paused on purpose
        and committed offsets are not known yet."""
        if app.flow_control.is_active() and not app.in_recovery:
            return True
        stalls.reset()  # judge stalls afresh after it
        progress.reset()
        return False

    def assigned_partitions() -> list:
        return [tp for tp in app.consumer.assignment() if tp.topic == topic]

    @app.timer(interval=idle_seconds)
    async def resume_stalled_partitions() -> None:
        """Fetch a partition stuck behind a message that was never processed again from its committed offset."""
        if not settled():
            return
        assigned = assigned_partitions()
        ends = await end_offsets.get(assigned, timeout=idle_seconds)
        if not settled() or set(assigned) != set(assigned_partitions()):
            return  # a rebalance began while the broker was asked
        committed_by_tp = committed_offsets(app.consumer)
        committed = {tp: committed_by_tp.get(tp) or 0 for tp in assigned}
        stuck = progress.observe({tp.partition: o for tp, o in committed.items()},
                                 {tp.partition: ends.get(tp, 0) for tp in assigned}, time.monotonic())
        metrics.record_partition_progress(topic, stuck, report_after_seconds)
        for tp, offset in stalls.stalled(committed, ends).items():
            log.warning("Partition %s[%d] stalled at offset %d of %d; fetching it again from there",
                        tp.topic, tp.partition, offset, ends[tp])
            metrics.partition_stall_resumes.labels(tp.topic, str(tp.partition)).inc()
            app.consumer.resume_partitions({tp})
            await app.consumer.seek(tp, offset)

    return stalls
