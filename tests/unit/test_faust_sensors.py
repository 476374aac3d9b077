"""Faust's sensors as the worker installs them: the end-offset gauge is read at scrape time, not set per message,
and the stream's inbound time that Faust's consumer thread checks is still kept."""

from __future__ import annotations

import time

import faust
from faust.types import TP
from prometheus_client import REGISTRY, generate_latest

from app.observability.metrics import setup_faust_sensors


def test_end_offsets_tracked_per_message_are_served_at_scrape():
    app = faust.App("unit-sensors", broker="kafka://127.0.0.1:1")
    setup_faust_sensors(app, name_prefix="unit_sensors")
    monitor = app.monitor
    for offset in range(5):  # what Faust's fetcher does for every message it yields
        monitor.track_tp_end_offset(TP("commands", 3), offset)
    assert monitor.tp_end_offsets == {TP("commands", 3): 4}  # the stall timer and the lag gauge read this
    text = generate_latest(REGISTRY).decode()
    assert 'unit_sensors_topic_partition_end_offset{partition="3",topic="commands"} 4.0' in text
    assert text.count("# TYPE unit_sensors_topic_partition_end_offset gauge") == 1


def test_each_event_marks_its_partition_as_processing():
    app = faust.App("unit-sensors-inbound", broker="kafka://127.0.0.1:1")
    setup_faust_sensors(app, name_prefix="unit_sensors_inbound")
    before = time.monotonic()
    app.monitor.on_stream_event_in(TP("commands", 5), 17, stream=None, event=None)
    # Faust's consumer thread compares this with its clock: a partition behind its end without it
    # is reported as "Stream has not started processing", every few seconds.
    assert before <= app.monitor.stream_inbound_time[TP("commands", 5)] <= time.monotonic()


def test_faust_per_request_sensors_are_off():
    app = faust.App("unit-sensors-web", broker="kafka://127.0.0.1:1")
    setup_faust_sensors(app, name_prefix="unit_sensors_web")
    state = app.monitor.on_web_request_start(app, request=None)
    app.monitor.on_web_request_end(app, request=None, response=None, state=state)  # would count a 500
    text = generate_latest(REGISTRY).decode()
    assert "unit_sensors_web_http_status_codes" not in text and "unit_sensors_web_http_latency" not in text
