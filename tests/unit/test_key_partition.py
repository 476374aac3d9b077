"""Our partitioner must be Kafka's: keys land, and GETs are routed, where any Kafka client would put them."""

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner, murmur2

from app.adapters.kafka_partitioner import KAFKA_MURMUR2_SEED, kafka_partitioner, key_partition


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


def test_kafka_partitioner_is_aiokafkas_default_partitioner():
    rng = random.Random(8)
    default = DefaultPartitioner()
    for _ in range(5_000):
        key = rng.choice([str(uuid.uuid4()).encode(), rng.randbytes(rng.randint(0, 40))])
        all_partitions = sorted(rng.sample(range(200), rng.choice([1, 3, 8, 12])))
        available = all_partitions[: rng.randint(1, len(all_partitions))]
        assert kafka_partitioner(key, all_partitions, available) == default(key, all_partitions, available)


def test_kafka_partitioner_spreads_keyless_messages_over_available_partitions():
    chosen = {kafka_partitioner(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert chosen == {1, 3}
    assert {kafka_partitioner(None, [0, 1], []) for _ in range(200)} == {0, 1}


def test_a_worker_owns_exactly_the_keys_of_its_partitions(monkeypatch):
    import tables.timestamps_by_id as table_module
    from app.settings import settings

    partitions = settings.command_topic_partitions
    monkeypatch.setattr(table_module, "owned_table_partitions", lambda: {1, partitions - 1})
    monkeypatch.setattr(table_module.OwnedForGets, "partitions", None)
    default = DefaultPartitioner()
    keys = [str(uuid.uuid4()).encode() for _ in range(2_000)]

    def owned_here(key: bytes) -> bool:  # as a GET decides it
        return table_module.owns_partition(key_partition(key, partitions))

    owned = [key for key in keys if owned_here(key)]
    assert owned and len(owned) < len(keys)
    for key in keys:
        expected = default(key, list(range(partitions)), list(range(partitions))) in {1, partitions - 1}
        assert owned_here(key) is expected


async def test_gets_read_the_owned_partitions_once_per_rebalance(monkeypatch):
    import tables.timestamps_by_id as table_module

    reads = []

    def assignment():
        reads.append(1)
        return {0, 1} if len(reads) == 1 else {2}

    monkeypatch.setattr(table_module, "owned_table_partitions", assignment)
    monkeypatch.setattr(table_module.OwnedForGets, "partitions", None)
    assert table_module.owns_partition(1) and table_module.owns_partition(1) and len(reads) == 1
    await table_module.app.on_partitions_revoked.send(set())
    assert not table_module.owns_partition(1) and len(reads) == 2  # partition 1 went elsewhere
    await table_module.app.on_partitions_assigned.send({1})
    assert table_module.OwnedForGets.partitions is None  # the next GET reads the new assignment
