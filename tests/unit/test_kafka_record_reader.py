"""The tolerant record reader (app/faust_compat/kafka_record_reader.py), on batches built here."""

from __future__ import annotations

import inspect
import struct
from datetime import datetime, timezone

import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy, _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

from app.domain.batch_plan import ConsumedMessage, plan_batch
from app.domain.dead_letters import ORIGINAL_HEADERS, dead_letter, describe
from app.domain.kafka_headers import decode_headers, encode_headers, undecodable_header_names
from app.domain.records import SourcePosition
from app.faust_compat import kafka_record_reader
from app.faust_compat.kafka_record_reader import TolerantMemoryRecords, check_aiokafka_version
from tests.kafka_records import RawHeaderName

BAD = b"x-\xff\xfe-name"


def batch(base_offset: int, records: list[tuple[bytes | None, list]]) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                           producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for delta, (value, headers) in enumerate(records):
        builder.append(delta, timestamp=1_700_000_000_000 + delta, key=b"k", value=value,
                       headers=[(RawHeaderName(name), v) for name, v in headers])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)
    return bytes(data)


def corrupt_first_record(data: bytes) -> bytes:
    """The batch with its first record's header count made negative, and a CRC that matches."""
    body = bytearray(data)
    header_count_at = len(body) - 1  # one record without headers: the count is its last byte
    body[header_count_at] = 0x01  # zig-zag varint -1
    crc = calc_crc32c(bytes(body[_DefaultRecordBatchPy.ATTRIBUTES_OFFSET:]))
    struct.pack_into(">I", body, _DefaultRecordBatchPy.CRC_OFFSET, crc)
    return bytes(body)


def read_all(records: TolerantMemoryRecords) -> tuple[list, list[int]]:
    read, next_offsets = [], []
    while records.has_next():
        batch_ = records.next_batch()
        read.extend(batch_)
        next_offsets.append(batch_.next_offset)
    return read, next_offsets


def test_aiokafka_still_refuses_header_names_that_are_not_utf8():
    # When this fails, aiokafka reads such names itself: kafka_record_reader may go.
    with pytest.raises(UnicodeDecodeError):
        list(MemoryRecords(batch(0, [(b"v", [(BAD, b"v")])])).next_batch())


def test_every_record_is_read_and_a_bad_name_keeps_its_bytes():
    data = batch(0, [(b"a", [(b"ok", b"1")])]) + batch(1, [(b"b", []), (b"c", [(BAD, b"v"), (b"\xc3\x28", None)])])
    records, next_offsets = read_all(TolerantMemoryRecords(data))
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert undecodable_header_names(records[2].headers) == [BAD, b"\xc3\x28"]
    assert records[2].headers[1][1] is None
    assert records[2].timestamp == 1_700_000_000_001  # CreateTime: first timestamp + delta
    assert next_offsets == [1, 3]


def test_a_batch_no_reader_can_read_stops_the_partition_in_front_of_it(monkeypatch):
    monkeypatch.setattr(kafka_record_reader, "BLOCKED_RETRY_SECONDS", 0)
    blocked = kafka_record_reader.BlockedPartitions()
    monkeypatch.setattr(kafka_record_reader, "blocked_partitions", blocked)
    data = batch(10, [(b"a", [])]) + corrupt_first_record(batch(11, [(b"b", [])])) + batch(12, [(b"c", [])])
    records = TolerantMemoryRecords(data)
    records.attach("commands", 3, fetch_offset=10)
    read, next_offsets = read_all(records)
    assert [r.offset for r in read] == [10]
    assert next_offsets == [11, 11]  # the fetcher resumes at the unreadable batch, never past it
    [where] = blocked.current([("commands", 3)])
    assert (where.topic, where.partition, where.offset) == ("commands", 3, 11)
    assert "header count" in where.reason
    assert blocked.current([("commands", 4)]) == []

    again = TolerantMemoryRecords(corrupt_first_record(batch(11, [(b"b", [])])))
    assert again.has_next()  # the fetcher makes a result of it, so the partition is named
    again.attach("commands", 3, fetch_offset=11)
    assert list(again.next_batch()) == [] and not again.has_next()
    assert len(blocked.current()) == 1

    TolerantMemoryRecords(batch(11, [(b"b", [])])).attach("commands", 3, fetch_offset=11)  # readable again
    assert blocked.current() == []


def test_a_blocked_batch_never_moves_the_fetch_position_back(monkeypatch):
    monkeypatch.setattr(kafka_record_reader, "BLOCKED_RETRY_SECONDS", 0)
    monkeypatch.setattr(kafka_record_reader, "blocked_partitions", kafka_record_reader.BlockedPartitions())
    records = TolerantMemoryRecords(corrupt_first_record(batch(20, [(b"b", [])])))
    records.attach("commands", 0, fetch_offset=25)  # a fetch from inside the batch
    assert records.has_next() and records.next_batch().next_offset == 25


def test_the_header_names_survive_a_dead_letter_byte_for_byte():
    headers = [("correlation_id", b"ING:x"), (BAD.decode("utf-8", "surrogateescape"), b"v"), ("n", None)]
    assert decode_headers(encode_headers(headers)) == [(b"correlation_id", b"ING:x"), (BAD, b"v"), (b"n", None)]
    message = ConsumedMessage(SourcePosition("commands", 1, 7), b'{"command_id": "x"}', headers, b"key")
    [event] = plan_batch([message], datetime.now(timezone.utc)).skipped
    assert event.status == "invalid"
    assert event.error == f"undecodable_record: header name {BAD!r} is not UTF-8"
    letter = dead_letter(message, event)
    assert describe(letter.headers)["dlq.reason"] == "undecodable_record"
    assert (letter.key, letter.value) == (b"key", b'{"command_id": "x"}')
    assert decode_headers(dict(letter.headers)[ORIGINAL_HEADERS])[1] == (BAD, b"v")
    assert all(isinstance(name, str) and name.isascii() for name, _ in letter.headers)  # any producer can send it


def test_an_ordinary_dead_letter_does_not_carry_the_original_headers():
    message = ConsumedMessage(SourcePosition("commands", 1, 7), b"[]", [("correlation_id", b"ING:x")])
    [event] = plan_batch([message], datetime.now(timezone.utc)).skipped
    assert ORIGINAL_HEADERS not in dict(dead_letter(message, event).headers)


def test_the_fetcher_internals_it_replaces_are_still_there():
    assert aiokafka_fetcher.MemoryRecords is not None and aiokafka_fetcher.PartitionRecords is not None
    parameters = list(inspect.signature(kafka_record_reader._ORIGINAL_PARTITION_RECORDS.__init__).parameters)
    assert parameters[1:5] == ["tp", "records", "aborted_transactions", "fetch_offset"]
    assert callable(_DefaultRecordBatchPy._read_msg)
    reader = _DefaultRecordBatchPy(batch(0, [(b"v", [])]))
    assert isinstance(reader._buffer, bytearray) and isinstance(reader._pos, int)
    for name in ("base_offset", "next_offset", "producer_id", "is_control_batch", "is_transactional",
                 "validate_crc", "timestamp_type", "first_timestamp", "max_timestamp"):
        assert hasattr(reader, name), name


def test_install_replaces_the_fetchers_reader():
    kafka_record_reader.install()
    assert kafka_record_reader.installed()
    assert aiokafka_fetcher.PartitionRecords is kafka_record_reader._AttachingPartitionRecords


def test_an_aiokafka_it_was_not_written_for_is_refused():
    check_aiokafka_version("0.14.0")
    with pytest.raises(RuntimeError, match="aiokafka 0.15.0 is installed"):
        check_aiokafka_version("0.15.0")
