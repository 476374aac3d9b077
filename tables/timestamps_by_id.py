"""The query table: command id (UTF-8 bytes) -> the JSON body served by GET /api/v1/timestamp/{id}.

Backed by its changelog topic, so a worker that takes over a partition recovers
the rows. The agent writes it a batch at a time (`TimestampTableWriter`), not
with `table[key] = value`: the same messages, a fraction of the cost.
"""

from __future__ import annotations

from typing import Callable

from app.adapters.database import Database
from app.domain.records import TimestampRecord
from app.faust_compat import fixes
from app.main import app
from app.settings import settings
from tables.changelog_batch_writer import ChangelogBatchWriter

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
)


class TimestampTableWriter:
    """Puts the records of a batch in the table, one changelog batch per partition."""

    def __init__(self, database: Database, owned_partitions: Callable[[], set[int]]) -> None:
        self.database = database
        self.changelog = ChangelogBatchWriter(timestamps_by_id, settings.kafka_bootstrap_servers,
                                              settings.command_topic_partitions, owned_partitions)

    async def update(self, records: list[TimestampRecord], inserted: dict) -> None:
        """Put newly inserted records in the table; fill in replayed ones it lacks."""
        missing = [r for r in records if r.id not in inserted and timestamps_by_id.get(str(r.id).encode()) is None]
        stored = {r.id: r for r in await self.database.fetch_records([r.id for r in missing])} if missing else {}
        await self.changelog.put_many(
            [(str(record.id).encode(), record.as_json(created_at=inserted[record.id])) for record in records
             if record.id in inserted]
            + [(str(record.id).encode(), record.as_json()) for record in stored.values()]
        )

    async def stop(self) -> None:
        await self.changelog.stop()


@app.task
async def load_changelog_metadata() -> None:
    """Fetch the changelog's partitions at start-up, so GETs can be routed to the owner at once."""
    await fixes.kafka_producer(app).partitions_for(timestamps_by_id.changelog_topic.get_topic_name())
