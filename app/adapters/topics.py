"""Topic creation, done before a worker subscribes so its first assignment includes them."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.adapters.kafka_client import Kafka, client_options

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36


async def ensure_topic(
    kafka: Kafka, name: str, partitions: int, replication_factor: int, config: dict[str, str]
) -> None:
    """Create the topic when it is missing (an existing one is left as it is)."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor, topic_configs=config)]
        )
    finally:
        await admin.close()
    for topic, code, *message in response.topic_errors:
        if code == TOPIC_ALREADY_EXISTS:
            return
        if code != 0:
            raise RuntimeError(f"could not create topic {topic}: error {code} {message}")
    log.info("Created topic %s with %d partitions", name, partitions)


async def topic_partitions(kafka: Kafka, name: str) -> list[int]:
    """The partition numbers of a topic; [] when it does not exist."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        [description] = await admin.describe_topics([name])
    finally:
        await admin.close()
    if description["error_code"] != 0:
        return []
    return sorted(p["partition"] for p in description["partitions"])
