"""JSON that is not UTF-8 on the command topic is invalid, whatever the encoding; nothing behind it is lost.

json.loads on bytes detects UTF-16 and UTF-32, and the MAX_JSON_DEPTH check scans
bytes for UTF-8 brackets, so a UTF-16LE command nested 200 deep was once stored as
`persisted`. RFC 8259 section 8.1 wants UTF-8 between systems: here every such
value, flat or nested, with or without a byte order mark, must get an `invalid`
row and a dead letter, and the valid command produced behind each one must be
stored once. A UTF-8 byte order mark is ignored (README), and a fraction of a
second is read as on HTTP: up to 9 digits, truncated to microseconds.
"""

from __future__ import annotations

import json
import uuid

from app.domain.dead_letters import describe
from app.ops.dead_letters import read_dead_letters
from tests.integration.conftest import assert_no_commit_past_a_missing_row, topic_end_offsets, wait_until

PARTITIONS = 4
NOT_UTF8 = "message value is not UTF-8 (JSON between systems must be, RFC 8259)"
NUL_BYTES = "message value is not UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?)"
TOO_DEEP = "message value nests deeper than 32 levels"
NESTED = "[" * 200 + "]" * 200
UTF8_BOM = b"\xef\xbb\xbf"


def command(command_id: str, timestamp: str = "2020-01-01T00:00:00Z") -> str:
    return json.dumps({"command_id": command_id, "event_timestamp": timestamp})


def cases() -> list[tuple[bytes, str, str | None, str | None]]:
    """(value, status, error, command id the value holds) of each message under test."""
    found = []
    for encoding in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        for bom in (False, True):
            prefix = "\ufeff" if bom else ""
            error = NOT_UTF8 if bom else NUL_BYTES  # a mark is never UTF-8; without one, NULs between ASCII
            command_id = str(uuid.uuid4())
            found.append(((prefix + command(command_id)).encode(encoding), "invalid", error, command_id))
            found.append(((prefix + NESTED).encode(encoding), "invalid", error, None))
    for encoding in ("utf-16", "utf-32"):  # as Python writes them: a mark, native byte order
        command_id = str(uuid.uuid4())
        found.append((command(command_id).encode(encoding), "invalid", NOT_UTF8, command_id))
    found.append((UTF8_BOM + NESTED.encode(), "invalid", TOO_DEEP, None))  # the mark hides no nesting
    found.append((UTF8_BOM + command(str(uuid.uuid4())).encode(), "persisted", None, None))  # the mark is ignored
    fraction_of_10 = str(uuid.uuid4())
    found.append((command(fraction_of_10, "2020-01-01T00:00:00.1234567891Z").encode(), "invalid",
                  "'event_timestamp': the fraction of a second has 10 digits; at most 9 (nanoseconds) are accepted",
                  fraction_of_10))
    return found


async def test_json_not_in_utf8_is_invalid_and_blocks_nothing(workers, namespace, bootstrap_servers, producer, http):
    await namespace.create_topic(PARTITIONS)
    expected_rows: dict[tuple[int, int], tuple[str, str | None]] = {}  # position -> (status, error)
    stored: dict[str, str] = {}  # command id -> the event_timestamp PostgreSQL must hold
    invalid: dict[tuple[int, int], tuple[bytes, str]] = {}  # position -> (value, error)
    never_stored: set[str] = set()  # ids inside values that are invalid

    async def send(partition: int, value: bytes, status: str, error: str | None = None) -> None:
        sent = await producer.send_and_wait(namespace.topic, value, key=b"k", partition=partition)
        expected_rows[(partition, sent.offset)] = (status, error)
        if status == "invalid":
            invalid[(partition, sent.offset)] = (value, error)

    async def send_valid(partition: int) -> None:
        command_id = str(uuid.uuid4())
        stored[command_id] = "2020-01-01T00:00:00.000000Z"
        await send(partition, command(command_id).encode(), "persisted")

    for index, (value, status, error, command_id) in enumerate(cases()):
        partition = index % PARTITIONS
        await send_valid(partition)
        await send(partition, value, status, error)
        if status == "persisted":
            stored[json.loads(value.decode("utf-8-sig"))["command_id"]] = "2020-01-01T00:00:00.000000Z"
        elif command_id:
            never_stored.add(command_id)
    nanoseconds = str(uuid.uuid4())  # truncated to microseconds, as on HTTP
    stored[nanoseconds] = "2020-01-01T00:00:00.123456Z"
    await send(0, command(nanoseconds, "2020-01-01T00:00:00.123456789Z").encode(), "persisted")
    for partition in range(PARTITIONS):
        await send_valid(partition)  # the last message of every partition is a valid command

    worker = await workers().wait_ready()
    ends = await topic_end_offsets(bootstrap_servers, namespace.topic)
    assert sum(ends.values()) == len(expected_rows)
    await assert_no_commit_past_a_missing_row(namespace, ends)

    rows = namespace.query('SELECT partition, "offset", status, error FROM processed_events')
    assert len(rows) == len(expected_rows)  # one row per message, none twice
    assert {(p, o): (status, error) for p, o, status, error in rows} == expected_rows
    records = namespace.query(
        """SELECT id::text, to_char(event_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           FROM timestamp_records""")
    assert len(records) == len(stored) and dict(records) == stored  # every valid command, once
    assert never_stored.isdisjoint(stored)

    async def every_letter():
        letters = await read_dead_letters(bootstrap_servers, f"{namespace.topic}.dlq")
        return letters if len(letters) >= len(invalid) else None

    letters = await wait_until(every_letter, 60, "a dead letter per invalid message")
    assert len(letters) == len(invalid)
    for letter in letters:
        headers = describe(letter.headers)
        position = (int(headers["dlq.original.partition"]), int(headers["dlq.original.offset"]))
        value, error = invalid.pop(position)
        assert (letter.value, letter.key, headers["dlq.reason"]) == (value, b"k", error)
    assert invalid == {}  # each invalid message has its letter

    async with http.get(f"{worker.url}/health/ready") as response:
        assert response.status == 200, await response.text()
    assert worker.process.poll() is None and "Crashed reason" not in worker.log()
