"""The JSON log line: ECS fields from the record and its context, nothing of the text pattern's."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.domain.correlation import log_context
from app.observability.logs import ContextFilter, JsonFormatter, skip_unused_record_fields


@pytest.fixture
def json_log():
    """A logger writing this service's JSON lines to a buffer; call it for the lines so far."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter("timestamp-pipeline"))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json_log")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.handlers = []


def test_a_line_carries_the_ecs_fields_and_the_context(json_log):
    logger, lines = json_log
    tracer = TracerProvider().get_tracer("test")
    with log_context("ING:0c8e1f4a-2b3d-4c5e-8f60-718293a4b5c6"), tracer.start_as_current_span("request") as span:
        logger.info("Accepted command %s at %s[%d]@%d", "9b2f", "timestamp.command.v1", 3, 12)
    [line] = lines()
    context = span.get_span_context()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("@timestamp"))
    assert line == {
        "log.level": "info",
        "message": "Accepted command 9b2f at timestamp.command.v1[3]@12",
        "ecs.version": "1.6.0",
        "log": {"logger": "tests.json_log"},
        "service": {"name": "timestamp-pipeline"},
        "correlation_id": "ING:0c8e1f4a-2b3d-4c5e-8f60-718293a4b5c6",
        "trace": {"id": format(context.trace_id, "032x")},
        "span": {"id": format(context.span_id, "016x")},
    }


def test_outside_a_request_a_line_has_no_correlation_or_trace(json_log):
    logger, lines = json_log
    logger.warning("Worker started")
    [line] = lines()
    assert line["log.level"] == "warning" and line["service"] == {"name": "timestamp-pipeline"}
    assert not {"correlation_id", "trace", "span", "event", "service_name", "corr_id"} & set(line)


def test_an_event_line_names_the_event(json_log):
    logger, lines = json_log
    with log_context("ING:x", "7f3c0e2a-0000-4000-8000-000000000001"):
        logger.warning("Skipped message")
    assert lines()[0]["event"] == {"id": "7f3c0e2a-0000-4000-8000-000000000001"}


def test_an_exception_becomes_the_ecs_error_object(json_log):
    logger, lines = json_log
    try:
        {}["missing"]
    except KeyError:
        logger.exception("Unhandled error in %s", "GET /x")
    [line] = lines()
    assert line["message"] == "Unhandled error in GET /x" and line["log.level"] == "error"
    assert line["error"]["type"] == "KeyError" and line["error"]["message"] == "'missing'"
    # The frames, as ecs-logging wrote them: no "Traceback" header, no last line repeating type and message.
    stack_trace = line["error"]["stack_trace"]
    assert stack_trace.startswith(f'  File "{__file__}"') and '{}["missing"]' in stack_trace
    assert "Traceback" not in stack_trace and "KeyError" not in stack_trace
    assert "exc_info" not in line


def test_extra_fields_are_kept(json_log):
    logger, lines = json_log
    logger.info("Rebalanced", extra={"partitions": [0, 3]})
    assert lines()[0]["partitions"] == [0, 3]


def test_the_timestamp_is_the_records_time_in_utc_to_the_millisecond():
    formatter = JsonFormatter()
    stamps = []
    for created in (1_700_000_000.9994, 1_700_000_001.0006, 1_700_000_001.5, 1_600_000_000.25):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        stamps.append(json.loads(formatter.format(record))["@timestamp"])
    assert stamps == ["2023-11-14T22:13:20.999Z", "2023-11-14T22:13:21.000Z", "2023-11-14T22:13:21.500Z",
                      "2020-09-13T12:26:40.250Z"]


def test_records_skip_the_thread_and_process_lookups(monkeypatch):
    for flag in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, True)
    skip_unused_record_fields()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert (record.thread, record.process, record.processName) == (None, None, None)


def test_records_skip_finding_the_caller(monkeypatch):
    monkeypatch.setattr(logging, "_srcfile", logging._srcfile)  # restored after the test
    skip_unused_record_fields()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("test_records_skip_finding_the_caller")
    logger.addHandler(handler)
    try:
        logger.warning("m")
    finally:
        logger.removeHandler(handler)
    # A Python upgrade that drops the switch would make the logger walk the stack again: this fails then.
    assert (records[0].funcName, records[0].lineno) == ("(unknown function)", 0)
