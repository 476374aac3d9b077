"""The query table: command id (UTF-8 bytes) -> the JSON body served by GET /api/v1/timestamp/{id}.

Backed by its changelog topic, so a worker that takes over a partition recovers
the rows. The agent writes it a batch at a time (`TimestampTableWriter`), not
with `table[key] = value`: the same messages, a fraction of the cost.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable

from app.adapters.database import Database
from app.observability import metrics
from app.domain.records import TimestampRecord, key_of
from app.faust_compat import fixes
from app.faust_compat.table_store import MIB
from app.faust_app import app
from app.settings import settings
from tables.changelog_batch_writer import ChangelogBatchWriter
from tables.table_expiry import TableExpiry, changelog_topic_config, expired

log = logging.getLogger(__name__)


async def _count_changelog_record(event) -> None:
    """Faust calls it for each changelog record it reads (recovery and standby alike)."""
    metrics.table_changelog_records_read.labels(str(event.message.partition)).inc()


MEMTABLES_PER_PARTITION = 2


def rocksdb_options(write_buffer_mib: int) -> dict[str, int]:
    """Faust's RocksDB options for one partition's store (the memory store ignores them).

    Faust opens a RocksDB per table partition, active or standby, with up to 3
    memtables of 64 MiB each by default: an id written stays in a memtable until
    64 MiB of them fill it, so the worker grew by about one value per command.
    Small memtables are flushed to disk early. What all the partitions' stores
    hold together is bounded by the worker (`table_store.bound_store_memory`,
    TABLE_ROCKSDB_MEMORY_MIB); the budget is in docs/deployment.md.
    """
    return {"write_buffer_size": write_buffer_mib * MIB, "max_write_buffer_number": MEMTABLES_PER_PARTITION}


timestamps_by_id = app.Table(
    # The name makes the changelog topic's (<APP_ID>-timestamps-changelog): keep it.
    "timestamps",
    default=None,
    # Raw bytes keys: serialized exactly like the command topic's keys, so a
    # command and its row share a partition number (and so a worker).
    key_type=bytes,
    # Values are the GET response body, encoded once by the agent
    # (TimestampRecord.as_json); bytes values get Faust's raw codec.
    value_type=bytes,
    partitions=settings.command_topic_partitions,
    # The changelog partition of a key comes from the key (as GET routing
    # assumes), not from the event being processed (faust-streaming #497).
    use_partitioner=True,
    help="Timestamp records by command id, as served by the query view.",
    on_changelog_event=_count_changelog_record,
    options=rocksdb_options(settings.table_rocksdb_write_buffer_mib),
    # Only with TABLE_RETENTION: tombstones must leave the changelog soon (`tables.table_expiry`).
    extra_topic_configs=changelog_topic_config(settings.table_changelog_segment_ms,
                                               settings.table_changelog_delete_retention_ms)
    if settings.table_retention else None,
)


class TimestampTableWriter:
    """Puts the records of a batch in the table, one changelog batch per partition."""

    def __init__(self, *, database: Database, owned_partitions: Callable[[], set[int]]) -> None:
        self.database = database
        self.changelog = ChangelogBatchWriter(timestamps_by_id, settings.kafka,
                                              settings.command_topic_partitions, owned_partitions)

    async def update(self, records: list[TimestampRecord], inserted: dict) -> None:
        """Put newly inserted records in the table; fill in replayed ones it lacks."""
        missing = [r for r in records if r.id not in inserted and timestamps_by_id.get(key_of(r.id)) is None]
        stored = {r.id: r for r in await self.database.fetch_records([r.id for r in missing])} if missing else {}
        now = datetime.now(timezone.utc)
        # An id the expiry has passed stays out: behind its cursor nothing would tombstone it again.
        stored = {i: r for i, r in stored.items() if not expired(r.created_at, settings.table_retention, now)}
        await self.changelog.put_many(
            [(key_of(record.id), record.as_json(created_at=inserted[record.id])) for record in records
             if record.id in inserted]
            + [(key_of(record.id), record.as_json()) for record in stored.values()]
        )

    async def stop(self) -> None:
        await self.changelog.stop()


def _holds(key: bytes) -> bool:
    return timestamps_by_id.get(key) is not None


if settings.table_retention:
    @app.timer(interval=settings.table_expiry_interval_seconds)
    async def expire_old_ids() -> None:
        """Tombstone the ids older than TABLE_RETENTION in this worker's table partitions."""
        if not app.schema_ready.is_set() or app.in_recovery or not app.tables.recovery.completed.is_set():
            return  # the store is not complete yet; the next run does it
        try:
            await app.services.table_expiry.sweep()
        except Exception as exc:  # a timer that raises stops the worker; the next run retries
            log.warning("Table expiry failed (next try in %.0f s): %s: %s", settings.table_expiry_interval_seconds,
                        type(exc).__name__, " ".join(str(exc).split()))


def table_expiry(database: Database) -> TableExpiry | None:
    """The sweeper of TABLE_RETENTION (None without it), with a changelog writer of its own."""
    if not settings.table_retention:
        return None
    changelog = ChangelogBatchWriter(timestamps_by_id, settings.kafka, settings.command_topic_partitions,
                                     owned_table_partitions)
    return TableExpiry(database, changelog, _holds, settings.table_retention, settings.command_topic_partitions,
                       owned_table_partitions)


def owned_table_partitions() -> set[int]:
    """Partitions of the command topic, and so of the table, this worker owns now."""
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.command_topic}


class OwnedForGets:
    """`owned_table_partitions()` as GETs see it: read from the consumer once per rebalance.

    Building the set from the consumer's assignment was a tenth of a GET at 2,000/s
    (docs/performance.md, part 5). Forgotten when partitions are revoked and again
    when they are assigned, so the first GET after a rebalance reads the new assignment.
    """

    partitions: frozenset[int] | None = None


@app.on_partitions_revoked.connect
@app.on_partitions_assigned.connect
async def forget_owned_partitions(sender, *args, **kwargs) -> None:
    OwnedForGets.partitions = None


def owns_partition(partition: int) -> bool:
    """Whether this worker owns the table partition now, so answers a GET of its keys without Faust's router.

    The router names the owner by the same partitioner, but builds the owner's URL
    for every GET: about 20 µs of a GET that never leaves this worker (docs/performance.md, part 4).
    """
    owned = OwnedForGets.partitions
    if owned is None:
        owned = OwnedForGets.partitions = frozenset(owned_table_partitions())
    return partition in owned


@app.task
async def load_changelog_metadata() -> None:
    """Fetch the changelog's partitions at start-up, so GETs can be routed to the owner at once."""
    await fixes.kafka_producer(app).partitions_for(timestamps_by_id.changelog_topic.get_topic_name())
