"""TABLE_RETENTION: tombstone the ids of the query table whose record is older than the window.

The window is measured by the record's `created_at`, set by PostgreSQL when the
row is inserted: one clock for every worker, the same value the table serves,
and it never changes for an id (a later duplicate keeps the first row). Each
sweep asks PostgreSQL for ids created in [the partition's cursor, now() -
retention), keeps those of the table partitions this worker owns that its
store holds, and deletes them from the changelog and the store with one
tombstone batch per partition (the agent's writer, `ChangelogBatchWriter`).
The cursor of each table partition is kept in PostgreSQL, so the next owner of
a partition goes on where the last one stopped.

A GET for an expired id is answered by PostgreSQL. The agent never puts an
expired id back in the table (`TimestampTableWriter.update`), so a late
duplicate cannot revive it behind the cursor.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Callable

from app.adapters.database import Database
from app.adapters.kafka_partitioner import key_partition
from app.domain.records import key_of
from app.observability import metrics
from tables.changelog_batch_writer import ChangelogBatchWriter

log = logging.getLogger(__name__)

NEVER = datetime(1970, 1, 1, tzinfo=timezone.utc)
PAGE = 5000


def changelog_topic_config(segment_ms: int, delete_retention_ms: int) -> dict[str, str]:
    """What a compacted changelog needs for tombstones to leave it soon.

    Kafka never compacts the active segment (segment.ms defaults to 7 days), and
    keeps a tombstone delete.retention.ms after compaction (1 day by default);
    min.compaction.lag.ms 0 and a low dirty ratio let the cleaner run early.
    """
    return {
        "segment.ms": str(segment_ms),
        "delete.retention.ms": str(delete_retention_ms),
        "min.compaction.lag.ms": "0",
        "min.cleanable.dirty.ratio": "0.1",
    }


class TableExpiry:
    """Sweeps the expired ids out of the table partitions this worker owns."""

    def __init__(self, database: Database, changelog: ChangelogBatchWriter, holds: Callable[[bytes], bool],
                 retention_seconds: float, partitions: int, owned_partitions: Callable[[], set[int]]) -> None:
        self.database = database
        self.changelog = changelog
        self._holds = holds
        self.retention_seconds = retention_seconds
        self.partitions = partitions
        self._owned = owned_partitions

    async def sweep(self, page: int = PAGE) -> int:
        """Tombstone what expired since the last sweep; returns how many ids left the table."""
        owned = self._owned()
        if not owned:
            return 0
        cursors = await self.database.expiry_cursors(sorted(owned))
        after = (min(cursors.get(p, NEVER) for p in owned), uuid.UUID(int=0))
        expired = 0
        while True:
            rows, boundary = await self.database.expired_ids(after, self.retention_seconds, page)
            gone = []
            for id_, created_at in rows:
                key = key_of(id_)
                partition = key_partition(key, self.partitions)
                if partition in owned and created_at >= cursors.get(partition, NEVER) and self._holds(key):
                    gone.append((key, None))
            await self.changelog.put_many(gone)
            expired += len(gone)
            metrics.table_expired.inc(len(gone))
            if len(rows) < page:
                reached = boundary
                break
            after = (rows[-1][1], rows[-1][0])
            reached = rows[-1][1]  # ids at this very created_at may remain: the next page starts at it
            await self.database.save_expiry_cursors({p: reached for p in owned})
        await self.database.save_expiry_cursors({p: reached for p in owned})
        if expired:
            log.info("Table expiry: %d ids older than TABLE_RETENTION left the table", expired)
        return expired


def expired(created_at: datetime | None, retention_seconds: float | None, now: datetime) -> bool:
    """Whether a record created then is outside the table's window now (pure)."""
    if retention_seconds is None or created_at is None:
        return False
    return (now - created_at).total_seconds() > retention_seconds
