"""The batch write policy, with fakes for PostgreSQL, the dead-letter topic and the table."""

from __future__ import annotations

import uuid

import faust
import psycopg2
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from app.domain.batch_plan import ConsumedMessage
from app.domain.commands import encode_command
from app.domain.dead_letters import describe
from app.domain.records import SourcePosition
from app.domain.rfc3339 import utc_now
from app.faust_compat.fixes import ManualAckStream
from app.sink.batch_writer import BatchWriter
from tests.unit.fakes import FakeDatabase


def messages(count: int) -> list[ConsumedMessage]:
    return [ConsumedMessage(SourcePosition("t", 0, offset), encode_command(uuid.uuid4(), "2020-01-01T00:00:00Z",
                                                                        utc_now()))
            for offset in range(count)]


def command_id(message: ConsumedMessage) -> uuid.UUID:
    from app.domain.commands import decode_command

    return decode_command(message.value).command_id


async def no_table(records, inserted):
    pass


async def test_a_failing_message_is_isolated_and_the_rest_is_written():
    batch = messages(20)
    bad = {command_id(batch[3]), command_id(batch[17])}
    database, letters = FakeDatabase(refuse=bad), []

    async def send(sent):
        letters.extend(sent)

    await BatchWriter(database=database, send_dead_letters=send, update_table=no_table, topic="t").write(batch)
    assert set(database.records) == {command_id(m) for m in batch} - bad
    assert {e.source.offset: e.status for e in database.events.values() if e.status != "persisted"} == {
        3: "failed", 17: "failed"}
    assert len(database.events) == 20
    assert [describe(letter.headers)["dlq.original.offset"] for letter in letters] == ["3", "17"]
    assert {describe(letter.headers)["dlq.error.type"] for letter in letters} == {"DataError"}
    assert database.writes < 20 * 2  # bisection, not one write per message


async def test_a_table_failure_is_isolated_too():
    batch = messages(8)
    bad = command_id(batch[5])
    database, letters = FakeDatabase(), []

    async def table(records, inserted):
        if any(r.id == bad for r in records):
            raise RuntimeError("table broke")

    async def send(sent):
        letters.extend(sent)

    await BatchWriter(database=database, send_dead_letters=send, update_table=table, topic="t").write(batch)
    assert len(database.records) == 8  # committed before the table raised
    assert [describe(letter.headers)["dlq.reason"] for letter in letters] == ["processing_error"]


async def test_invalid_messages_are_dead_lettered_once_and_repeats_of_a_position_count_once():
    batch = messages(3)
    nested = ConsumedMessage(SourcePosition("t", 0, 9), b"[" * 5000 + b"]" * 5000)
    database, letters = FakeDatabase(), []

    async def send(sent):
        letters.extend(sent)

    await BatchWriter(database=database, send_dead_letters=send, update_table=no_table, topic="t").write(
        batch + [nested, nested, batch[0]])
    assert [describe(letter.headers)["dlq.reason"] for letter in letters] == [
        "message value nests deeper than 32 levels"]
    assert len(database.events) == 4


async def test_a_dead_letter_the_broker_refuses_is_sent_without_its_value():
    nested = ConsumedMessage(SourcePosition("t", 0, 1), b"[" * 5000 + b"]" * 5000)
    sent, attempts = [], []

    async def send(letters):
        attempts.append(len(letters))
        if len(attempts) == 1:
            raise KafkaConnectionError()  # retried: the broker is away
        if any(letter.value is not None for letter in letters):
            raise MessageSizeTooLargeError()
        sent.extend(letters)

    await BatchWriter(database=FakeDatabase(), send_dead_letters=send, update_table=no_table, topic="t", retry_max_seconds=0).write([nested])
    [letter] = sent
    assert letter.value is None and describe(letter.headers)["dlq.value.omitted"] == "MessageSizeTooLargeError"


async def test_cancellation_is_not_swallowed():
    import asyncio

    async def send(letters):
        raise asyncio.CancelledError()

    nested = ConsumedMessage(SourcePosition("t", 0, 1), b"[" * 5000 + b"]" * 5000)
    with pytest.raises(asyncio.CancelledError):
        await BatchWriter(database=FakeDatabase(), send_dead_letters=send, update_table=no_table, topic="t").write([nested])


def test_the_stream_never_turns_automatic_acks_on():
    app = faust.App("unit-manual-ack", Stream=ManualAckStream)
    stream = app.stream([1, 2, 3])
    assert isinstance(stream, ManualAckStream) and stream.enable_acks is False
    stream.enable_acks = True  # what take()/noack_take() restore in their finally
    assert stream.enable_acks is False


async def test_postgresql_away_while_the_table_reads_records_is_retried_not_dead_lettered():
    batch = messages(6)
    database, letters, reads = FakeDatabase(), [], []

    async def send(sent):
        letters.extend(sent)

    async def update_table(records, inserted):
        reads.append(len(records))
        if len(reads) == 1:  # the table's look-up of records it lacks hits a restarting server
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

    outcome = await BatchWriter(database=database, send_dead_letters=send, update_table=update_table, topic="t", retry_max_seconds=0).write(batch)
    assert reads == [6, 6]
    assert letters == []
    assert outcome.failed == 0
    assert len(database.records) == 6
