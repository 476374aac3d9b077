"""What the tolerant record reader (app/faust_compat/kafka_record_reader.py) costs, CPU only.

The same fetched bytes (seed-format commands in batches of RECORDS_PER_BATCH,
as a producer with linger writes them) are read three ways, in this process:
aiokafka's own C reader (the ceiling), the worker's reader on ordinary batches
(aiokafka's reader plus our batch wrapper), and the pure-Python fallback that
reads a batch holding a header name that is not UTF-8.
"""

from __future__ import annotations

import json
import time
import uuid

from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords

from app.faust_compat.kafka_record_reader import TolerantMemoryRecords

RECORDS_PER_BATCH = 500
HEADERS = [("correlation_id", b"ING:" + str(uuid.uuid4()).encode())]


class _RawName(str):
    def encode(self, *args, **kwargs) -> bytes:
        return b"x-\xff\xfe-name"


def fetched_bytes(records: int, undecodable: bool) -> bytes:
    """`records` commands as consecutive v2 batches, one header name not UTF-8 per batch if asked."""
    data = bytearray()
    for base in range(0, records, RECORDS_PER_BATCH):
        builder = _DefaultRecordBatchBuilderPy(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                               producer_epoch=-1, base_sequence=-1, batch_size=1 << 22)
        for delta in range(min(RECORDS_PER_BATCH, records - base)):
            value = json.dumps({"command_id": str(uuid.uuid4()), "event_timestamp": "2024-01-01T00:00:00Z"}).encode()
            headers = HEADERS + [(_RawName("x"), b"v")] if undecodable and delta == 0 else HEADERS
            builder.append(delta, timestamp=None, key=b"k", value=value, headers=headers)
        batch = bytearray(builder.build())
        batch[0:8] = base.to_bytes(8, "big")
        data += batch
    return bytes(data)


def _read(reader_class, data: bytes) -> tuple[int, float]:
    started = time.process_time()
    records = reader_class(data)
    count = 0
    while records.has_next():
        for _ in records.next_batch():
            count += 1
    return count, time.process_time() - started


def measure_record_reader(records: int = 100_000, rounds: int = 3) -> dict:
    """CPU µs per record of each reader (best of `rounds`), and the ratios to aiokafka's own."""
    ordinary, undecodable = fetched_bytes(records, False), fetched_bytes(records, True)

    def best(reader_class, data) -> float:
        runs = [_read(reader_class, data) for _ in range(rounds)]
        assert all(count == records for count, _ in runs), "a reader lost records"
        return min(seconds for _, seconds in runs) / records * 1e6

    aiokafka_us = best(MemoryRecords, ordinary)
    wrapped_us = best(TolerantMemoryRecords, ordinary)
    fallback_us = best(TolerantMemoryRecords, undecodable)
    return {
        "records": records, "records_per_batch": RECORDS_PER_BATCH,
        "aiokafka_us_per_record": round(aiokafka_us, 3),
        "worker_reader_us_per_record": round(wrapped_us, 3),
        "added_us_per_record": round(wrapped_us - aiokafka_us, 3),
        "fallback_us_per_record": round(fallback_us, 3),
        "fallback_ratio_to_aiokafka": round(fallback_us / aiokafka_us, 1),
    }


if __name__ == "__main__":
    print(json.dumps(measure_record_reader(), indent=2))
