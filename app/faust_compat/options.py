"""The Faust settings of the worker's App, in one place.

`app.faust_app` builds the worker's App with them; the benchmark's bare agent
(`bench.bare_faust`) builds an App with the same settings and nothing else,
so the two are compared like for like.
"""

from __future__ import annotations

import os

from app.adapters.kafka_client import faust_credentials
from app.adapters.kafka_partitioner import kafka_partitioner
from app.faust_compat import fixes as faust_fixes
from app.observability.logs import logging_config
from app.settings import Settings

# A dead letter is its message plus headers, so it may exceed the broker's
# default limit that the message itself met; room for that, and a producer that
# may send it. (A letter refused anyway is sent without its value, `app.sink.batch_writer`.)
DEAD_LETTER_MAX_BYTES = 2 * 1024 * 1024


def kafka_request_timeout_seconds(settings: Settings) -> float:
    """How long Kafka clients wait for one request; a POST gives up sooner (PUBLISH_TIMEOUT_SECONDS)."""
    return max(30.0, settings.publish_timeout_seconds * 3)


def data_dir(settings: Settings, environ=os.environ) -> str:
    """Faust's `--datadir` when given, else WORKER_DATA_DIR.

    `import faust` reads `--datadir` from the command line and exports it as FAUST_DATADIR, before the
    app module is imported (the CLI's own F_DATADIR comes later, and always holds a value).
    """
    return environ.get("FAUST_DATADIR") or settings.worker_data_dir


def faust_options(settings: Settings, web_application_options: dict | None = None) -> dict:
    """Keyword arguments of `faust.App(settings.app_id, **...)` for a worker (web options from the web layer)."""
    return dict(
        broker=settings.kafka_broker_url,
        # Like every client, from `app.adapters.kafka_client` (read when Faust builds a client).
        broker_credentials=faust_credentials(settings.kafka),
        # Without KAFKA_CREATE_TOPICS an admin pre-creates the topics (docs/security.md), and the worker
        # needs no Create ACL: Faust declares none of its own either.
        topic_allow_declare=settings.kafka_create_topics,
        # No task uses on_leader=True, so Faust's leader-election topic (<APP_ID>-__assignor-__leader)
        # is neither created nor needs an ACL.
        topic_disable_leader=True,
        store=settings.table_store,
        datadir=data_dir(settings),
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=settings.command_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        # acks=all for what Faust produces (changelog, dead letters); HTTP commands
        # have their own producer (`app.adapters.publisher`).
        producer_acks=-1,
        # Kafka's default partitioner with the hash in C: Faust's router partitions every GET's key by it.
        producer_partitioner=kafka_partitioner,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        # Static membership: a restart within the session timeout moves no partition (KIP-345).
        consumer_group_instance_id=settings.kafka_group_instance_id or None,
        broker_heartbeat_interval=max(1.0, settings.kafka_session_timeout_seconds / 4),
        producer_request_timeout=kafka_request_timeout_seconds(settings),
        producer_max_request_size=DEAD_LETTER_MAX_BYTES + 64 * 1024,
        web_in_thread=False,
        # Acks only from the agent, after the commit (`app.faust_compat.fixes`, fix 0).
        Stream=faust_fixes.ManualAckStream,
        # Do not wait at a rebalance or shutdown for messages that started
        # processing: they are read again by the next owner, and writes are
        # idempotent (Faust's documented choice for such streams). Waiting hung
        # forever on messages that no agent would ever acknowledge.
        stream_wait_empty=False,
        web_application_options=web_application_options or {},
        # Faust's own /table and /router pages would serve table contents and the
        # key-to-worker map to anyone, outside the API and its keys.
        web_tables_enabled=False,
        web_router_enabled=False,
        logging_config=logging_config(settings.log_format, settings.log_level, settings.service_name),
    )
