"""Kafka's default partitioner, with MurmurHash2 in C: a key's partition as Java's and aiokafka's clients give it.

aiokafka's `DefaultPartitioner` hashes in pure Python, about 8 µs a key here;
every keyed publish (a POST) and every GET routed through Faust's router paid
it. tests/unit/test_key_partition.py checks that both agree.
"""

from __future__ import annotations

import random
from typing import Sequence

from murmurhash2 import murmurhash2

KAFKA_MURMUR2_SEED = 0x9747B28C  # Kafka's DefaultPartitioner (Java's Utils.murmur2, aiokafka's murmur2)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key among `partitions`."""
    return (murmurhash2(key, KAFKA_MURMUR2_SEED) & 0x7FFFFFFF) % partitions


def kafka_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's `DefaultPartitioner`, for a producer's `partitioner=` (and Faust's `producer_partitioner`)."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_partition(key, len(all_partitions))]
