"""The worker's entry: `faust -A app.main worker`. It assembles the worker; nothing imports it.

    POST /api/v1/timestamp ──> timestamp.command.v1 ──> persist_timestamps ──> PostgreSQL
                                                          │        │
                                                          │        └──> timestamps_by_id (table) <── GET /api/v1/timestamp/{id}
                                                          └──> timestamp.command.v1.dlq (dead letters)

`app.faust_app` defines the app and its topics; the modules imported below
register the table, the agents and the views on it; when the worker starts,
`start_worker` installs the framework fixes and builds the services
(`app.bootstrap`). docs/design.md has the picture.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import faust

from app import aiohttp_compat, faust_compat
from app.bootstrap import bootstrap
from app.faust_app import app
from app.faust_compat import table_store
from app.observability import metrics
from app.observability.logs import skip_unused_record_fields
from app.observability.tracing import setup_tracing
from app.settings import SettingsError, settings
from web import middleware
from web.auth import api_keys

# Registrations: each module adds its part to `app` when imported.
import tables.timestamps_by_id  # noqa: E402  the query table
import agents.persist_timestamps  # noqa: E402,F401  command_topic -> PostgreSQL, the table, dead letters
import agents.audit_offsets  # noqa: E402,F401  a timer: Kafka offsets against processed_events
import web.timestamp_views  # noqa: E402,F401  POST -> command_topic; GET <- timestamps_by_id
import web.event_views  # noqa: E402,F401  GET the processing log of a correlation id
import web.health  # noqa: E402,F401  liveness and readiness probes
import web.metrics_view  # noqa: E402,F401  /metrics
import web.openapi_view  # noqa: E402,F401  /openapi.json

YOUNG_COLLECTION_THRESHOLD = 50_000  # net allocations between collections of the youngest generation


@app.on_worker_init.connect
def start_worker(sender: faust.App, **kwargs) -> None:
    """Before the worker's services start: fixes, files, tracing and the parts, in that order."""
    if sender.started:
        return
    if (given := settings_datadir_conflict(sender)) is not None:
        raise SettingsError(given)
    parts = dict(sender.parts)
    faust_compat.install(tolerant_batch=parts.pop("tolerant_batch", None))  # refuses an unknown Faust
    aiohttp_compat.install(middleware.parser_error)
    try:
        api_keys.load(settings.api_keys, settings.api_keys_file)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    # Faust creates only the last level of its datadir; nested defaults need the rest.
    sender.conf.datadir.parent.mkdir(parents=True, exist_ok=True)
    table_store.bound_store_memory(tables.timestamps_by_id.timestamps_by_id,
                                   settings.table_rocksdb_memory_mib * table_store.MIB)
    setup_tracing(settings.service_name)
    skip_unused_record_fields()
    metrics.setup_faust_sensors(sender, name_prefix="faust")  # served at /metrics with ours
    metrics.collect_pipeline_metrics(sender, settings.command_topic, tables.timestamps_by_id.timestamps_by_id)
    sender.services = bootstrap(settings, **parts)
    # What start-up built (modules, the app, its services) lives as long as the worker. Frozen, it
    # is left out of the collector's full passes, which otherwise walk all of it: 30-60 ms each of
    # event loop held under load, most of the HTTP p99 (docs/performance.md, "Garbage collection").
    gc.collect()
    gc.freeze()
    # Collect young objects after 50,000 net allocations instead of 700: under load each pass
    # promoted the objects of requests and batches still in flight, and the full passes that
    # followed held the loop 40-50 ms each (docs/performance.md, "POST against Faust's floor").
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def settings_datadir_conflict(sender: faust.App) -> str | None:
    """A `--datadir` the app could not honour: given after the app was built (only when the CLI is
    started from an imported app, as `app.main()` does)."""
    given = os.environ.get("FAUST_DATADIR")
    if given and Path(given).resolve() != Path(str(sender.conf.datadir)).resolve():
        return (f"--datadir {given!r} came after the app was built with {sender.conf.datadir}: "
                "set WORKER_DATA_DIR instead")
    return None
