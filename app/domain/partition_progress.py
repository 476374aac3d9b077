"""Is a partition moving? Committed offsets against end offsets over time (pure functions).

A partition is stalled when its committed offset stays behind its end offset
without advancing for longer than PARTITION_STALL_SECONDS. A partition that is
caught up, or whose committed offset moved, is not.
"""

from __future__ import annotations


class PartitionProgress:
    """Remembers, per partition, its committed offset and since when it has not moved while behind."""

    def __init__(self) -> None:
        self._since: dict = {}  # partition -> (committed offset, time it was first seen there while behind)

    def reset(self) -> None:
        """Forget everything: after a rebalance, progress is judged afresh."""
        self._since = {}

    def observe(self, committed: dict, ends: dict, now: float) -> dict:
        """Seconds each partition has been behind its end without its committed offset moving (0: moving)."""
        stuck = {}
        for partition, offset in committed.items():
            offset = offset or 0
            if ends.get(partition, 0) <= offset:
                self._since.pop(partition, None)
                stuck[partition] = 0.0
                continue
            seen = self._since.get(partition)
            if seen is None or seen[0] != offset:
                self._since[partition] = seen = (offset, now)
            stuck[partition] = now - seen[1]
        for partition in set(self._since) - set(committed):
            del self._since[partition]
        return stuck


def stalled_in_audit(before: dict, after: dict, ends: dict, head_ages: dict, threshold_seconds: float) -> dict:
    """What a one-shot audit calls stalled: partition -> age in seconds of its oldest unprocessed record.

    `before` and `after` are the committed offsets at the start and the end of a
    short confirmation; `head_ages` the age of the record at the committed offset.
    Stalled: behind the end, the committed offset did not move, and the oldest
    unprocessed record is older than the threshold (a healthy consumer would
    have processed it by then).
    """
    return {
        partition: head_ages[partition]
        for partition, offset in after.items()
        if (offset or 0) < ends.get(partition, 0) and before.get(partition) == offset
        and head_ages.get(partition, 0) > threshold_seconds
    }
