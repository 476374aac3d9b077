"""Produce records no Kafka client API of ours can write: header names that are not UTF-8.

librdkafka, sarama and franz-go take header names as bytes; aiokafka's and
Java's producers take text. To write what those others can, a batch is built
with aiokafka's pure-Python record builder and a name that encodes to its raw
bytes, and sent with the producer's public `send_batch`.
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy


class RawHeaderName(str):
    """A header name whose `encode()` gives these exact bytes, whatever they are."""

    def __new__(cls, raw: bytes) -> "RawHeaderName":
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, *args, **kwargs) -> bytes:  # noqa: D102
        return self.raw


async def send_raw(producer: AIOKafkaProducer, topic: str, partition: int, value: bytes | None,
                   key: bytes | None = b"k", headers: list[tuple[bytes, bytes]] = ()) -> int:
    """Send one record whose header names are `headers`' bytes as they are; returns its offset."""
    batch = producer.create_batch()
    batch._builder = _DefaultRecordBatchBuilderPy(  # the C builder accepts only `str` names
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=0, batch_size=1024 * 1024)
    batch.append(timestamp=None, key=key, value=value, headers=[(RawHeaderName(n), v) for n, v in headers])
    batch.close()
    delivery = await producer.send_batch(batch, topic, partition=partition)
    return (await delivery).offset
