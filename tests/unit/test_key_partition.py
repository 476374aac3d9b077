"""The table's partitioner must be Kafka's: GETs are routed by aiokafka's murmur2 of the key."""

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner, murmur2

from tables.changelog_batch_writer import KAFKA_MURMUR2_SEED, key_partition


def test_c_murmur2_equals_aiokafkas_on_random_keys():
    from murmurhash2 import murmurhash2

    rng = random.Random(21)
    keys = [rng.randbytes(rng.randint(0, 80)) for _ in range(20_000)] + [str(uuid.uuid4()).encode() for _ in range(20_000)]
    for key in keys:
        assert murmurhash2(key, KAFKA_MURMUR2_SEED) & 0xFFFFFFFF == murmur2(key) & 0xFFFFFFFF, key


def test_key_partition_is_the_default_partitioners_for_every_partition_count():
    rng = random.Random(5)
    partitioner = DefaultPartitioner()
    for _ in range(20_000):
        key = rng.choice([str(uuid.uuid4()).encode(), rng.randbytes(rng.randint(1, 40))])
        partitions = rng.choice([1, 2, 3, 8, 12, 100])
        assert key_partition(key, partitions) == partitioner(key, list(range(partitions)), list(range(partitions)))
