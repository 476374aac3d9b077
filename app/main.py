"""The topology of a worker: `faust -A app.main worker` starts one.

    POST /v1/timestamps ──> timestamp.command.v1 ──> persist_timestamps ──> PostgreSQL
                                                        │        │
                                                        │        └──> timestamps_by_id (table) <── GET /api/v1/timestamp/{id}
                                                        └──> timestamp.command.v1.dlq (dead letters)

The services (database, publisher, breaker) are built in app/services.py, the
write policy is app/sink/, and docs/design.md maps the rest.
"""

from __future__ import annotations

import warnings

import faust
from faust.exceptions import AlreadyConfiguredWarning

from app.faust_compat import fixes
from app.faust_compat.options import DEAD_LETTER_MAX_BYTES, faust_options
from app.lifecycle import PipelineApp
from app.observability import metrics
from app.observability.tracing import setup_tracing
from app.settings import settings

fixes.apply()  # refuses a Faust the fixes were not written for

# The default datadir names the web port; Faust formats it lazily at each use, so
# the late `--web-port` of the CLI is honoured, but Faust warns that the port was
# read before it was set.
warnings.filterwarnings("ignore", message=".*web_port.*", category=AlreadyConfiguredWarning)

# The topic is the golden record: by default nothing is ever deleted from it.
COMMAND_TOPIC_CONFIG = {"retention.ms": str(settings.command_topic_retention_ms)}
DEAD_LETTER_TOPIC_CONFIG = {**COMMAND_TOPIC_CONFIG, "max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}

app = PipelineApp(
    settings.app_id,
    topic_configs={settings.command_topic: COMMAND_TOPIC_CONFIG, settings.dead_letter_topic: DEAD_LETTER_TOPIC_CONFIG},
    **faust_options(settings),  # shared with the benchmark's bare agent
)
setup_tracing(settings.service_name)
metrics.setup_faust_sensors(app, name_prefix="faust")  # served at /metrics with ours


@app.on_worker_init.connect
def _create_data_dir(sender: faust.App, **kwargs) -> None:
    # Faust creates only the last level of its datadir; nested defaults need the rest.
    sender.conf.datadir.parent.mkdir(parents=True, exist_ok=True)


def _bytes_topic(name: str) -> faust.TopicT:
    """A topic of raw bytes: the agent validates values itself, whoever produced them."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=settings.command_topic_partitions, config=COMMAND_TOPIC_CONFIG)


command_topic = _bytes_topic(settings.command_topic)
dead_letter_topic = _bytes_topic(settings.dead_letter_topic)

# Tables, agents and views register themselves on `app` when imported (they import it from here).
import tables.timestamps_by_id  # noqa: E402  the query table
import agents.persist_timestamps  # noqa: E402,F401  command_topic -> PostgreSQL, the table, dead letters
import agents.audit_offsets  # noqa: E402,F401  a timer: Kafka offsets against processed_events
import web.timestamp_views  # noqa: E402,F401  POST -> command_topic; GET <- timestamps_by_id
import web.event_views  # noqa: E402,F401  GET the processing log of a correlation id
import web.health  # noqa: E402,F401  liveness and readiness probes
import web.metrics_view  # noqa: E402,F401  /metrics
import web.openapi_view  # noqa: E402,F401  /openapi.json

metrics.collect_pipeline_metrics(app, settings.command_topic, tables.timestamps_by_id.timestamps_by_id)
