"""Another producer writes anything to the command topic: every valid command is kept, nothing else blocks it.

On each of the 8 partitions, hostile messages are interleaved with valid
commands; then the group's offsets must reach the end of every partition with
one processed_events row per message, every valid command stored once, every
hostile message dead-lettered once, and the worker healthy.
"""

from __future__ import annotations

import json
import uuid

from aiokafka import AIOKafkaProducer

from app.domain.dead_letters import ORIGINAL_HEADERS, describe
from app.domain.kafka_headers import decode_headers
from app.ops.dead_letters import read_dead_letters
from tests.integration.conftest import assert_no_commit_past_a_missing_row, topic_end_offsets, wait_until
from tests.kafka_records import send_raw

PARTITIONS = 8
NEAR_BROKER_LIMIT = 1_048_000  # the broker's default message.max.bytes is 1,048,588 per record batch


def command(command_id: str, timestamp: str = "2020-01-01T00:00:00Z", **extra) -> bytes:
    return json.dumps({"command_id": command_id, "event_timestamp": timestamp, **extra}).encode()


NOT_UTF8 = "message value is not UTF-8 (JSON between systems must be, RFC 8259)"
NUL_BYTES = "message value is not UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?)"

# (value, expected error in processed_events) of the hostile kinds
HOSTILE = [
    (None, "message has no value"),  # a tombstone
    (b"\xff\xfe\xfd", "message value is not UTF-8 (JSON between systems must be, RFC 8259)"),
    (b"[1,2,3]", "message value is not a JSON object"),
    (b"42", "message value is not a JSON object"),
    (b'{"command_id": null}', "'command_id' is missing or not a string"),
    (b"[" * 5000 + b"]" * 5000, "message value nests deeper than 32 levels"),
    (command("not-a-uuid"), "'command_id' is not a UUID"),
    # JSON in UTF-16 and UTF-32, flat and nested past MAX_JSON_DEPTH, with and without a byte order mark:
    # json.loads would read them, and the depth check could not (RFC 8259 wants UTF-8).
    (command(str(uuid.uuid4())).decode().encode("utf-16-le"), NUL_BYTES),
    (command(str(uuid.uuid4())).decode().encode("utf-16"), NOT_UTF8),
    (command(str(uuid.uuid4())).decode().encode("utf-32"), NOT_UTF8),
    (("[" * 200 + "]" * 200).encode("utf-16-le"), NUL_BYTES),
    (("[" * 200 + "]" * 200).encode("utf-32-be"), NUL_BYTES),
    (("\ufeff" + "[" * 200 + "]" * 200).encode("utf-16-be"), NOT_UTF8),
    (json.dumps({"command_id": str(uuid.uuid4()), "event_timestamp": 1254164592}).encode(),
     "'event_timestamp' is missing or not a string"),
]
# Header names that are not UTF-8: aiokafka's reader used to crash the worker on them.
BAD_NAME = b"x-\xff\xfe-name"
UNDECODABLE = f"undecodable_record: header name {BAD_NAME!r} is not UTF-8"
RAW_HEADERS = [(b"correlation_id", b"ING:3f1c0e4e-0b5e-4c47-9a43-7c1f4f2b8f10"), (BAD_NAME, b"v"), (b"\xc3\x28", b"")]
UNDECODABLE_TWO = f"undecodable_record: header names {BAD_NAME!r}, {RAW_HEADERS[2][0]!r} are not UTF-8"
GARBAGE_HEADERS = [("correlation_id", b"\xff\xfe"), ("correlation_id", b"ING:<script>alert(1)</script>"),
                   ("traceparent", b"00-garbage"), ("nul", b"\x00" * 16), ("big", b"y" * 10_000), ("empty", b"")]


async def test_hostile_messages_on_every_partition_lose_and_block_nothing(workers, namespace, bootstrap_servers, http):
    await namespace.create_topic(PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", max_request_size=2 * 1024 * 1024)
    await producer.start()
    expected_rows: dict[tuple[int, int], tuple[str, str | None]] = {}  # position -> (status, error)
    stored: dict[str, str] = {}  # command id -> event_timestamp that must be stored
    hostile_positions = set()
    undecodable_positions = set()
    try:
        async def send(partition, value, status, error=None, key=b"k", headers=()):
            sent = await producer.send_and_wait(namespace.topic, value, key=key, partition=partition,
                                                headers=list(headers))
            expected_rows[(partition, sent.offset)] = (status, error)
            if status == "invalid":
                hostile_positions.add((partition, sent.offset))

        async def send_undecodable(partition, value):
            offset = await send_raw(producer, namespace.topic, partition, value, headers=RAW_HEADERS)
            expected_rows[(partition, offset)] = ("invalid", UNDECODABLE_TWO)
            hostile_positions.add((partition, offset))
            undecodable_positions.add((partition, offset))

        async def send_valid(partition, **kwargs):
            command_id = str(uuid.uuid4())
            stored[command_id] = "2020-01-01T00:00:00Z"
            await send(partition, command(command_id), "persisted", **kwargs)

        for partition in range(PARTITIONS):
            for value, error in HOSTILE:
                await send_valid(partition)
                await send(partition, value, "invalid", error)
            await send_valid(partition, key=b"\xff\xfe\x00 not utf-8")
            # A valid command behind a bad header name is dead-lettered whole (docs/design.md).
            await send_undecodable(partition, command(str(uuid.uuid4())))
            await send_valid(partition)
            await send_undecodable(partition, b"[" * 200 + b"]" * 200)
            await send_valid(partition, headers=GARBAGE_HEADERS)
            extra = str(uuid.uuid4())
            stored[extra] = "2020-01-01T00:00:00Z"
            await send(partition, command(extra, unknown={"nested": [1, {"a": None}]}, more="fields"), "persisted")
            twice = str(uuid.uuid4())  # the first command of an id wins
            stored[twice] = "2020-01-01T00:00:00Z"
            await send(partition, command(twice), "persisted")
            await send(partition, command(twice, "2021-06-01T00:00:00Z"), "duplicate")
        big = str(uuid.uuid4())
        padding = "x" * (NEAR_BROKER_LIMIT - len(command(big, padding="")))
        stored[big] = "2020-01-01T00:00:00Z"
        await send(0, command(big, padding=padding), "persisted")
        await send(1, b"x" * NEAR_BROKER_LIMIT, "invalid", "message value is not JSON")
    finally:
        await producer.stop()

    worker = await workers().wait_ready()
    ends = await topic_end_offsets(bootstrap_servers, namespace.topic)
    await assert_no_commit_past_a_missing_row(namespace, ends)

    rows = namespace.query('SELECT partition, "offset", status, error FROM processed_events')
    assert {(p, o): (status, error) for p, o, status, error in rows} == expected_rows
    records = dict(namespace.query(
        """SELECT id::text, to_char(event_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           FROM timestamp_records"""))
    assert records == stored

    async def every_letter():
        letters = await read_dead_letters(bootstrap_servers, f"{namespace.topic}.dlq")
        return letters if len(letters) >= len(hostile_positions) else None

    letters = await wait_until(every_letter, 60, "a dead letter per hostile message")
    origins = [(int(describe(r.headers)["dlq.original.partition"]), int(describe(r.headers)["dlq.original.offset"]))
               for r in letters]
    assert sorted(origins) == sorted(hostile_positions)
    assert sum(1 for r in letters if r.value is None) == PARTITIONS  # the tombstones, as they were
    undecodable = [r for r in letters if describe(r.headers)["dlq.reason"] == "undecodable_record"]
    assert {(int(describe(r.headers)["dlq.original.partition"]), int(describe(r.headers)["dlq.original.offset"]))
            for r in undecodable} == undecodable_positions
    for letter in undecodable:  # every original header, names byte for byte
        assert decode_headers(dict(letter.headers)[ORIGINAL_HEADERS]) == RAW_HEADERS

    async with http.get(f"{worker.url}/health/ready") as response:
        assert response.status == 200, await response.text()
    assert "Crashed reason" not in worker.log()
    code, seconds = worker.terminate()
    assert code == 0 and seconds < 30


async def test_header_names_that_are_not_utf8_stop_no_worker(workers, namespace, bootstrap_servers, http):
    """Two workers share the partitions while records with such names arrive on each of them.

    Before kafka_record_reader, aiokafka's reader raised UnicodeDecodeError in Faust's
    Fetcher: the worker exited, the next owner of the partition crashed the same way, and
    the commands behind the record never got a row.
    """
    await namespace.create_topic(PARTITIONS)
    first, second = workers(), workers()
    await first.wait_ready()
    await second.wait_ready()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    valid: set[str] = set()
    undecodable: set[tuple[int, int]] = set()
    try:
        for partition in range(PARTITIONS):
            for value in (command(str(uuid.uuid4())), b"\xff not json"):
                undecodable.add((partition, await send_raw(producer, namespace.topic, partition, value,
                                                            headers=[(BAD_NAME, b"v")])))
                command_id = str(uuid.uuid4())
                valid.add(command_id)
                await producer.send_and_wait(namespace.topic, command(command_id), key=b"k", partition=partition)
    finally:
        await producer.stop()

    await namespace.wait_for_records(len(valid), timeout=90)
    ends = await topic_end_offsets(bootstrap_servers, namespace.topic)

    async def every_offset_has_its_row():
        return namespace.query("SELECT count(*) FROM processed_events")[0][0] == sum(ends.values())

    await wait_until(every_offset_has_its_row, 60, "a processed_events row per offset")
    assert {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")} == valid
    invalid = namespace.query("SELECT partition, \"offset\", error FROM processed_events WHERE status = 'invalid'")
    assert {(p, o) for p, o, _ in invalid} == undecodable
    assert {error for _, _, error in invalid} == {UNDECODABLE}
    await assert_no_commit_past_a_missing_row(namespace, ends)
    for worker in (first, second):
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert "Crashed reason" not in worker.log()
        async with http.get(f"{worker.url}/health/ready") as response:
            assert response.status == 200, await response.text()


async def test_commands_in_every_compression_codec_are_stored(workers, namespace, bootstrap_servers):
    """A batch in a codec the worker cannot decompress would stop its partition (kafka_record_reader)."""
    await namespace.create_topic(PARTITIONS)
    sent = set()
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", compression_type=codec,
                                    linger_ms=50)
        await producer.start()
        try:
            ids = [str(uuid.uuid4()) for _ in range(20)]
            deliveries = [await producer.send(namespace.topic, command(i), key=i.encode()) for i in ids]
            for delivery in deliveries:
                await delivery
            sent.update(ids)
        finally:
            await producer.stop()
    worker = await workers().wait_ready()
    await namespace.wait_for_records(len(sent))
    assert {row[0] for row in namespace.query("SELECT id::text FROM timestamp_records")} == sent
    assert "cannot be read" not in worker.log()
