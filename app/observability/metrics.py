"""Prometheus metrics: one registry, served at /metrics with Faust's own sensors.

Names follow Prometheus conventions: base units, `_total` counters, `_seconds`
histograms, low-cardinality labels. `docs/operations.md` describes each one.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections import deque
from time import monotonic
from typing import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.domain.records import Status
from app.faust_compat.table_store import estimated_key_count, store_memory

PREFIX = "timestamp"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

http_requests = Counter(
    f"{PREFIX}_http_requests_total", "HTTP requests answered, by route, method and status.",
    ["route", "method", "status"],
)
http_request_duration = Histogram(
    f"{PREFIX}_http_request_duration_seconds", "Time to answer an HTTP request.",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
commands_published = Counter(
    f"{PREFIX}_commands_published_total", "Commands acknowledged by the broker (POST answered 200).",
)
command_publish_failures = Counter(
    f"{PREFIX}_command_publish_failures_total", "Commands the broker did not acknowledge (POST answered 503).",
    ["reason"],
)
http_requests_shed = Counter(
    f"{PREFIX}_http_requests_shed_total",
    "API requests answered 503 overloaded + Retry-After without being handled, by route, method and reason: "
    "publishes_in_flight (MAX_IN_FLIGHT_PUBLISHES POSTs awaited the broker) or waited (longer than "
    "MAX_REQUEST_WAIT_SECONDS in the worker before its handler ran).",
    ["route", "method", "reason"],
)
command_publishes_in_flight = Gauge(
    f"{PREFIX}_command_publishes_in_flight", "POSTs awaiting the broker's acknowledgement now.",
)
events_processed = Counter(
    f"{PREFIX}_events_processed_total", "Consumed messages, by outcome: persisted, duplicate, invalid, failed.",
    ["outcome"],
)
dead_letters = Counter(
    f"{PREFIX}_dead_letters_total", "Messages sent to the dead-letter topic.",
)
batch_splits = Counter(
    f"{PREFIX}_batch_splits_total", "Batches split in halves to isolate messages whose processing raised.",
)
table_expired = Counter(
    f"{PREFIX}_table_expired_total", "Ids tombstoned out of the query table by TABLE_RETENTION.",
)
table_changelog_records_read = Counter(
    f"{PREFIX}_table_changelog_records_read_total",
    "Changelog records of the query table this worker read: recovering a partition it took over, "
    "or keeping its standby copy of another worker's partition warm.",
    ["partition"],
)
record_lookups = Counter(
    f"{PREFIX}_record_lookups_total",
    "GET /api/v1/timestamp/{id} answers by where the record came from: table, database, or none (404).",
    ["source"],
)
# The labelled children a request touches, looked up once per label values: each
# `labels()` call validates the values and takes the metric's lock (3-4 µs a call here,
# two calls a request). Only for metrics whose children are never removed, and whose label
# values are bounded (the route's pattern, a known method, the status).
http_requests_by = functools.cache(http_requests.labels)
http_request_duration_by = functools.cache(http_request_duration.labels)
record_lookups_by = functools.cache(record_lookups.labels)
batch_size = Histogram(
    f"{PREFIX}_batch_size_events", "Messages per database batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
db_write_duration = Histogram(
    f"{PREFIX}_db_write_duration_seconds", "Time of one batch transaction in PostgreSQL, retries included.",
    buckets=LATENCY_BUCKETS,
)
db_write_failures = Counter(
    f"{PREFIX}_db_write_failures_total", "Failed attempts to write a batch (each retry counts).",
)
end_to_end_latency = Histogram(
    f"{PREFIX}_end_to_end_latency_seconds", "From a command's received_at to its row committed in PostgreSQL.",
    buckets=LATENCY_BUCKETS,
)

circuit_breaker_state = Gauge(
    f"{PREFIX}_circuit_breaker_state", "PostgreSQL write circuit breaker: 0 closed, 1 half-open, 2 open.",
)
circuit_breaker_transitions = Counter(
    f"{PREFIX}_circuit_breaker_transitions_total", "Circuit breaker state changes.", ["from_state", "to_state"],
)


def record_breaker_transition(old, new) -> None:
    circuit_breaker_state.set(new.value)
    circuit_breaker_transitions.labels(old.name.lower(), new.name.lower()).inc()


table_store_unwritable = Gauge(
    f"{PREFIX}_table_store_unwritable",
    "1 while the query table's local store refuses writes (its disk is full, or another I/O error): the "
    "worker holds its batch, takes no more work and reports not ready until a write succeeds.",
)
table_store_write_failures = Counter(
    f"{PREFIX}_table_store_write_failures_total", "Writes the table's local store refused (each retry counts).",
)
audit_gap_messages = Gauge(
    f"{PREFIX}_audit_gap_messages",
    "Messages below the group's committed offset without a processed_events row (confirmed in Kafka), "
    "in the last AUDIT_WINDOW_MESSAGES offsets of each partition assigned to this worker.",
    ["topic", "partition"],
)
rebalances = Counter(
    f"{PREFIX}_rebalances_total", "Consumer-group rebalances this worker took part in (completed).",
)
event_loop_lag = Gauge(
    f"{PREFIX}_event_loop_lag_seconds",
    "Longest delay of a 0.25 s timer on the worker's event loop over the last 10 s.",
)
partition_stall_seconds = Gauge(
    f"{PREFIX}_partition_stall_seconds",
    "Seconds this worker's partition has been behind its end offset without its committed offset moving "
    "(0: caught up or moving).",
    ["topic", "partition"],
)
partition_stalled = Gauge(
    f"{PREFIX}_partition_stalled",
    "1 when the partition has been stalled longer than PARTITION_STALL_SECONDS while the group was stable.",
    ["topic", "partition"],
)
partition_stall_resumes = Counter(
    f"{PREFIX}_partition_stall_resumes_total",
    "Times this worker found the partition stalled behind its end and fetched it again from its committed offset.",
    ["topic", "partition"],
)
_stall_labels: set[tuple[str, str]] = set()


def record_partition_progress(topic: str, stuck_seconds: dict, threshold_seconds: float) -> None:
    """This worker's partitions (partition -> seconds without progress while behind); others are dropped."""
    keep = {(topic, str(p)) for p in stuck_seconds}
    for labels in _stall_labels - keep:
        partition_stall_seconds.remove(*labels)
        partition_stalled.remove(*labels)
    _stall_labels.intersection_update(keep)
    for partition, seconds in stuck_seconds.items():
        partition_stall_seconds.labels(topic, str(partition)).set(seconds)
        partition_stalled.labels(topic, str(partition)).set(1 if seconds > threshold_seconds else 0)
        _stall_labels.add((topic, str(partition)))


audit_last_success = Gauge(
    f"{PREFIX}_audit_last_success_timestamp_seconds", "Unix time at which this worker's offset audit last completed.",
)
_audit_labels: set[tuple[str, str]] = set()


def forget_audit_partitions(topic: str, partitions) -> None:
    """Drop the audit figures of partitions this worker no longer owns (their new owner reports them)."""
    keep = {(topic, str(p)) for p in partitions}
    for labels in _audit_labels - keep:
        audit_gap_messages.remove(*labels)
    _audit_labels.intersection_update(keep)


def record_audit(topic: str, missing: dict[int, int]) -> None:
    """The result of one audit of this worker's partitions (partition -> missing messages)."""
    forget_audit_partitions(topic, missing)
    for partition, value in missing.items():
        audit_gap_messages.labels(topic, str(partition)).set(value)
        _audit_labels.add((topic, str(partition)))
    audit_last_success.set_to_current_time()


for outcome in Status:
    events_processed.labels(outcome)  # present at zero before the first event


class PipelineCollector(Collector):
    """Values read at scrape time: consumer lag per partition, table size and the table store's memory."""

    def __init__(self, lag: Callable[[], Iterable[tuple[str, int, int]]], table_keys: Callable[[], int],
                 table_store_memory: Callable[[], dict[str, int]]) -> None:
        self._lag = lag
        self._table_keys = table_keys
        self._table_store_memory = table_store_memory

    def describe(self):
        """The names, without reading the worker's state (the registry asks at registration)."""
        yield GaugeMetricFamily(f"{PREFIX}_consumer_lag_messages", "", labels=["topic", "partition"])
        yield GaugeMetricFamily(f"{PREFIX}_table_keys", "")
        yield GaugeMetricFamily(f"{PREFIX}_table_store_memory_bytes", "", labels=["part"])
        yield GaugeMetricFamily(f"{PREFIX}_asyncio_tasks", "")
        yield GaugeMetricFamily(f"{PREFIX}_gc_frozen_objects", "")
        yield GaugeMetricFamily(f"{PREFIX}_gc_young_threshold", "")

    def collect(self):
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag_messages",
            "End offset minus committed offset, per assigned topic partition of this worker.",
            labels=["topic", "partition"],
        )
        for topic, partition, value in self._lag():
            lag.add_metric([topic, str(partition)], value)
        yield lag
        yield GaugeMetricFamily(
            f"{PREFIX}_table_keys", "Keys of the query table in this worker's partitions (RocksDB's estimate).",
            value=self._table_keys(),
        )
        memory = GaugeMetricFamily(
            f"{PREFIX}_table_store_memory_bytes",
            "Memory RocksDB holds for the query table's partitions in this worker, active and standby: "
            "memtables, block cache (index and filter blocks included), table readers (outside the cache).",
            labels=["part"],
        )
        for part, value in self._table_store_memory().items():
            memory.add_metric([part], value)
        yield memory
        yield GaugeMetricFamily(
            f"{PREFIX}_asyncio_tasks", "Tasks alive on the worker's event loop.", value=_tasks_alive(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_gc_frozen_objects",
            "Objects built at start-up that the garbage collector's full passes skip (gc.freeze at worker start).",
            value=gc.get_freeze_count(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_gc_young_threshold",
            "Net allocations of tracked objects between collections of the youngest generation "
            "(gc.set_threshold at worker start).",
            value=gc.get_threshold()[0],
        )


class FaustEndOffsets(Collector):
    """Faust's end-offset gauge, read from the monitor at scrape time rather than set per fetched message."""

    def __init__(self, name: str, ends: Callable[[], dict]) -> None:
        self._name = name
        self._ends = ends

    def describe(self):
        yield GaugeMetricFamily(self._name, "", labels=["topic", "partition"])

    def collect(self):
        family = GaugeMetricFamily(self._name, "Offset ends per topic/partition", labels=["topic", "partition"])
        for tp, offset in sorted(self._ends().items()):
            family.add_metric([tp.topic, str(tp.partition)], offset)
        yield family


def _tasks_alive() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the loop (a test's registry dump)
        return 0


class LoopLagProbe:
    """How late the event loop runs a timer: the longest delay of the last `window_seconds`.

    A request or a batch that holds the loop delays every other coroutine by as
    much; this is what the HTTP tail and the agent's progress feel.
    """

    def __init__(self, gauge: Gauge, interval_seconds: float = 0.25, window_seconds: float = 10.0) -> None:
        self.gauge = gauge
        self.interval = interval_seconds
        self.delays: deque[float] = deque(maxlen=max(1, round(window_seconds / interval_seconds)))

    def observe(self, delay_seconds: float) -> None:
        self.delays.append(max(0.0, delay_seconds))
        self.gauge.set(max(self.delays))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.observe(loop.time() - due)


def register_collector(collector: Collector) -> None:
    REGISTRY.register(collector)


# Faust's per-message sensors: each costs a few label look-ups per message and
# event, and `timestamp_events_processed_total` and the batch metrics above
# already count what they count, per batch.
_PER_EVENT_FAUST_METRICS = (
    "messages_received", "active_messages", "messages_received_per_topics",
    "messages_received_per_topics_partition", "events_runtime_latency", "total_events",
    "total_active_events", "total_events_per_stream", "table_operations", "topic_messages_sent",
    "total_sent_messages", "producer_send_latency",
)


# Faust's per-request sensors: `timestamp_http_requests_total` and `timestamp_http_request_duration_seconds`
# (the middleware) count the same requests, by route.
_PER_REQUEST_FAUST_METRICS = ("http_status_codes", "http_latency")


def setup_faust_sensors(app, name_prefix: str = "faust") -> None:
    """Faust's Prometheus sensors on the default registry, without the per-event and per-request ones.

    Kept: rebalances, assignments, commit latency, committed and end offsets,
    send errors. The offsets also feed `consumer_lag` and the
    stall detector, through the monitor's `tp_*_offsets`.
    """
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    faust_metrics = FaustMetrics.create(REGISTRY, name_prefix)
    for name in _PER_EVENT_FAUST_METRICS + _PER_REQUEST_FAUST_METRICS:
        REGISTRY.unregister(getattr(faust_metrics, name))

    class PipelineMonitor(PrometheusMonitor):
        """PrometheusMonitor whose per-message, per-event and per-request hooks do nothing."""

        def on_web_request_start(self, app, request, *, view=None):
            return None

        def on_web_request_end(self, app, request, response, state, *, view=None) -> None:
            pass

        def on_message_in(self, tp, offset, message) -> None:
            pass

        def on_stream_event_in(self, tp, offset, stream, event):
            # Faust's consumer thread reads this to tell a stream that stopped; without it, it logs
            # "Stream has not started processing" for every busy partition, every few seconds.
            self.stream_inbound_time[tp] = monotonic()
            return None

        def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
            pass

        def on_message_out(self, tp, offset, message) -> None:
            pass

        def on_table_get(self, table, key) -> None:
            pass

        def on_table_set(self, table, key, value) -> None:
            pass

        def on_table_del(self, table, key) -> None:
            pass

        def on_send_initiated(self, producer, topic, message, keysize, valsize):
            return self.time()  # the start time, for on_send_error's latency

        def on_send_completed(self, producer, state, metadata) -> None:
            pass

        def track_tp_end_offset(self, tp, offset: int) -> None:
            # Faust calls this for every message it fetches; its gauge is read at scrape time instead.
            self.tp_end_offsets[tp] = offset

    monitor = app.monitor = PipelineMonitor(metrics=faust_metrics)
    REGISTRY.unregister(faust_metrics.topic_partition_end_offset)
    register_collector(FaustEndOffsets(f"{name_prefix}_topic_partition_end_offset", lambda: monitor.tp_end_offsets))


def collect_pipeline_metrics(app, command_topic: str, table) -> None:
    """Export this worker's consumer lag and the query table's size (read at each scrape), and count rebalances."""

    @app.on_rebalance_complete.connect
    async def count_rebalance(sender, **kwargs) -> None:
        rebalances.inc()

    def consumer_lag() -> list[tuple[str, int, int]]:
        """(topic, partition, end offset - committed offset) of this worker's command partitions."""
        ends, committed = app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets
        return [
            (tp.topic, tp.partition, max(0, ends[tp] - committed.get(tp, 0)))
            for tp in sorted(ends)
            if tp.topic == command_topic and tp in app.consumer.assignment()
        ]

    def table_keys() -> int:
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == command_topic}
        return estimated_key_count(table, owned)

    register_collector(PipelineCollector(lag=consumer_lag, table_keys=table_keys,
                                         table_store_memory=lambda: store_memory(table)))

    @app.task
    async def probe_event_loop_lag() -> None:
        await LoopLagProbe(event_loop_lag).run()
