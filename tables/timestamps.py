"""The query table: command id (UTF-8 bytes) -> the record served by GET /api/v1/timestamp/{id}.

Backed by its changelog topic, so a worker that takes over a partition recovers
the rows. Written from inside a batch of events, hence `use_partitioner=True`
(faust-streaming issue #497): the changelog partition comes from the key, not
from the event being processed.
"""

from app.main import app
from app.settings import settings

timestamps = app.Table(
    "timestamps",
    default=None,
    # Raw bytes keys: serialized exactly like the command topic's keys, so a
    # command and its row share a partition number (and so a worker).
    key_type=bytes,
    partitions=settings.command_topic_partitions,
    use_partitioner=True,
    help="Timestamp records by command id, as served by the query view.",
)


@app.task
async def load_changelog_metadata() -> None:
    """Fetch the changelog's partitions at start-up, so GETs can be routed to the owner at once."""
    await app.producer._ensure_producer().partitions_for(timestamps.changelog_topic.get_topic_name())
