"""The Faust app, its topics and its options: what agents, tables and views register on.

It imports no agent, table or view (`app.main` assembles them), patches
nothing and connects to nothing: the worker's parts are built at start-up by
`app.bootstrap.bootstrap`, and Faust's and aiohttp's fixes are installed then
(`app.faust_compat.install`, `app.aiohttp_compat.install`).
"""

from __future__ import annotations

import warnings

import faust
from faust.exceptions import AlreadyConfiguredWarning

from app.faust_compat.options import DEAD_LETTER_MAX_BYTES, faust_options
from app.lifecycle import PipelineApp
from app.settings import settings
from web.middleware import WEB_APPLICATION_OPTIONS

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
    **faust_options(settings, web_application_options=WEB_APPLICATION_OPTIONS),  # shared with the bare agent
)


def _bytes_topic(name: str) -> faust.TopicT:
    """A topic of raw bytes: the agent validates values itself, whoever produced them."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=settings.command_topic_partitions, config=COMMAND_TOPIC_CONFIG)


command_topic = _bytes_topic(settings.command_topic)
dead_letter_topic = _bytes_topic(settings.dead_letter_topic)
