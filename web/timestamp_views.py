"""The v1 HTTP API: POST commands, GET records."""

from __future__ import annotations

import asyncio
import logging
import uuid

import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError
from faust.web import Request, Response, View

from app.adapters.kafka_partitioner import key_partition
from app.adapters.publisher import PublisherOverloaded
from app.domain import idempotency
from app.domain.commands import encode_command
from app.domain.correlation import correlation_id
from app.domain.records import canonical_id
from app.domain.rfc3339 import RFC3339_FORMAT, InvalidTimestamp, format_rfc3339, parse_rfc3339, utc_now
from app.faust_compat.routing import OwnerUnknown, answer_from_owner
from app.faust_compat.table_store import read_in_partition
from app.faust_app import app, command_topic
from app.observability import metrics
from app.observability.tracing import inject_headers, publish_span
from app.settings import settings
from tables.timestamps_by_id import owns_partition, timestamps_by_id
from web.middleware import json_error, overloaded

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = "5"
ACCEPTED_JSON = msgspec.json.Encoder()
# Set on a GET forwarded to the key's owner, so the owner never forwards it again.
ROUTED_HEADER = "X-Routed-By"


async def publish_command(request: Request, event_timestamp: str | None) -> Response:
    """Validate, publish and wait for the broker's acknowledgement (acks=all).

    With an Idempotency-Key the id is derived from the key, so a retried POST
    (on any worker) names the same command and the keyed insert keeps one row.
    """
    received_at = utc_now()
    if event_timestamp is None:
        event_timestamp = format_rfc3339(received_at)
    else:
        try:
            parse_rfc3339(event_timestamp)
        except InvalidTimestamp as exc:
            return json_error(
                400, "invalid_timestamp", f"{exc}: got {event_timestamp[:64]!r}, expected {RFC3339_FORMAT}"
            )
    key = request.headers.get(idempotency.HEADER)
    try:
        command_id = idempotency.command_id_for(key) if key is not None else uuid.uuid4()
    except idempotency.InvalidIdempotencyKey as exc:
        return json_error(400, "invalid_idempotency_key", str(exc))
    if app.services.command_publisher.saturated:
        return shed(request)
    try:
        async with asyncio.timeout(settings.publish_timeout_seconds):
            delivery = await _send(command_id, encode_command(command_id, event_timestamp, received_at))
    except PublisherOverloaded:
        return shed(request)
    except (asyncio.TimeoutError, KafkaError, ConnectionError) as exc:
        metrics.command_publish_failures.labels(type(exc).__name__).inc()
        log.error("Publishing command %s failed: %r", command_id, exc)
        return json_error(
            503, "broker_unavailable",
            "the broker did not acknowledge the command in time; it may still be stored, so retry with the same "
            "Idempotency-Key",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    metrics.commands_published.inc()
    log.info("Accepted command %s at %s[%d]@%d", command_id, delivery.topic, delivery.partition, delivery.offset)
    # What app.web.json answers (the same bytes and Content-Type), without Faust's JSON encoder.
    return web.Response(body=ACCEPTED_JSON.encode({"id": command_id}), content_type="application/json",
                        charset="utf-8", headers={"Location": f"/api/v1/timestamp/{command_id}"})


def shed(request: Request) -> Response:
    """503 + Retry-After at once: MAX_IN_FLIGHT_PUBLISHES commands are awaiting the broker already."""
    return overloaded(request, "publishes_in_flight",
                      f"{app.services.command_publisher.in_flight} publishes awaiting the broker "
                      f"(MAX_IN_FLIGHT_PUBLISHES={app.services.command_publisher.max_in_flight})")


async def _send(command_id: uuid.UUID, value: bytes):
    topic, key = command_topic.get_topic_name(), str(command_id)
    with publish_span(topic, key):
        headers = [("correlation_id", (correlation_id.get() or "").encode()), *inject_headers()]
        return await app.services.command_publisher.publish(topic, key.encode(), value, headers)


SERVED_FROM = "X-Served-From"  # table or database: where a GET's record came from


async def find_record(command_id: str, partition: int) -> tuple[bytes | None, str]:
    """The record's JSON and where it came from: the table when this worker has it, else PostgreSQL
    (an id not written yet, one this worker does not own, or one TABLE_RETENTION expired)."""
    # The key's partition store alone: Table.get tests membership and then reads each partition's.
    view = read_in_partition(timestamps_by_id, partition, command_id.encode())
    if view is not None:
        return view, "table"
    record = await app.services.database.fetch_record(uuid.UUID(command_id))
    return (record.as_json(), "database") if record else (None, "none")


@app.page("/api/v1/timestamp/{value}")
class TimestampView(View):
    """POST a timestamp command; GET the record of a command id."""

    async def post(self, request: Request, value: str) -> Response:
        return await publish_command(request, value)

    async def get(self, request: Request, value: str) -> Response:
        try:
            command_id = canonical_id(value)
        except ValueError:
            return json_error(400, "invalid_id", f"id must be a UUID (got {value[:64]!r})")
        partition = key_partition(command_id.encode(), settings.command_topic_partitions)
        if request.headers.get(ROUTED_HEADER) is None and not owns_partition(partition):
            try:
                answer = await answer_from_owner(app, timestamps_by_id.name, command_id.encode(), self.web,
                                                 lambda: _routed(request), keep_headers=(SERVED_FROM,))
                if answer is not None:
                    return answer
            except OwnerUnknown as exc:  # rebalancing, or unreachable: PostgreSQL still answers
                log.warning("Could not route GET %s to its owner: %s", command_id, exc)
        view, source = await find_record(command_id, partition)
        metrics.record_lookups_by(source).inc()
        if view is None:
            return json_error(404, "not_found", f"no timestamp record with id {command_id} (yet)")
        return self.bytes(view, content_type="application/json", headers={SERVED_FROM: source})


def _routed(request: Request) -> Request:
    return request.clone(headers={**request.headers, ROUTED_HEADER: app.conf.canonical_url.human_repr()})


@app.page("/api/v1/timestamp")
class CurrentTimestampView(View):
    """POST a command for the current time."""

    async def post(self, request: Request) -> Response:
        return await publish_command(request, None)


@app.page("/app")
class LegacyCurrentTimestampView(View):
    """The seed's legacy path: POST a command for the current time."""

    async def post(self, request: Request) -> Response:
        return await publish_command(request, None)
