"""app.observability.tracing: without an exporter, spans keep their ids but record nothing."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.observability import tracing
from app.observability.tracing import local_sampler

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_exported_spans_keep_the_configured_sampler():
    assert local_sampler(exporting=True) is None  # TracerProvider then reads OTEL_TRACES_SAMPLER


def test_unexported_spans_have_ids_continue_the_caller_and_record_nothing():
    tracer = TracerProvider(sampler=local_sampler(exporting=False)).get_tracer("test")
    propagator = TraceContextTextMapPropagator()
    with tracer.start_as_current_span("GET /api/v1/timestamp/{value}", kind=SpanKind.SERVER,
                                      context=propagator.extract({"traceparent": CALLER})) as span:
        assert not span.is_recording()
        context = span.get_span_context()
        assert context.is_valid and context.trace_id == 0x0af7651916cd43dd8448eb211c80319c  # the logs' trace.id
        sent: dict[str, str] = {}
        propagator.inject(sent)  # what a POST puts in the command's Kafka headers
        assert sent["traceparent"].split("-")[1:3] == ["0af7651916cd43dd8448eb211c80319c", f"{context.span_id:016x}"]
    with tracer.start_as_current_span("GET /health") as fresh:
        assert fresh.get_span_context().is_valid and not fresh.is_recording()


def test_a_publish_makes_a_producer_span_only_when_spans_are_exported(monkeypatch):
    exported = TracerProvider().get_tracer("test")
    monkeypatch.setattr(tracing, "tracer", exported)
    with exported.start_as_current_span("POST /api/v1/timestamp/{value}", kind=SpanKind.SERVER) as request:
        monkeypatch.setattr(tracing._Exporting, "value", False)
        with tracing.publish_span("timestamp.command.v1", "9b2f"):
            assert trace.get_current_span() is request  # the traceparent sent names the request's span
        monkeypatch.setattr(tracing._Exporting, "value", True)
        with tracing.publish_span("timestamp.command.v1", "9b2f") as publish:
            assert trace.get_current_span() is publish is not request
            assert publish.kind == SpanKind.PRODUCER and publish.name == "send timestamp.command.v1"
            assert publish.parent.span_id == request.get_span_context().span_id
            assert publish.attributes["messaging.message.id"] == "9b2f"


def test_an_unexported_request_span_is_only_ids_continuing_the_caller(monkeypatch):
    monkeypatch.setattr(tracing._Exporting, "value", False)
    headers = {"traceparent": CALLER, "tracestate": "vendor=a"}
    with tracing.request_span("POST /x", headers, lambda: pytest.fail("attributes of a span nothing exports")) as span:
        assert trace.get_current_span() is span and not span.is_recording()
        context = span.get_span_context()
        assert context.trace_id == 0x0af7651916cd43dd8448eb211c80319c and context.span_id not in (0, 0xb7ad6b7169203331)
        assert context.trace_state.get("vendor") == "a"
        sent: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(sent)
        assert sent["traceparent"] == f"00-0af7651916cd43dd8448eb211c80319c-{context.span_id:016x}-00"
    assert trace.get_current_span() is not span
    spans = []
    for headers in ({}, {"traceparent": "00-garbage"}):  # no caller, or one that cannot be read: a new trace
        with tracing.request_span("GET /x", headers, dict) as fresh:
            assert fresh.get_span_context().is_valid and not fresh.is_recording()
            spans.append(fresh.get_span_context())
    assert len({context.trace_id for context in spans} | {0x0af7651916cd43dd8448eb211c80319c}) == 3
    with pytest.raises(RuntimeError), tracing.request_span("GET /x", {}, dict) as failed:
        assert trace.get_current_span() is failed
        raise RuntimeError
    assert trace.get_current_span() is trace.INVALID_SPAN  # left current by no block, even one that raised


def test_an_exported_request_span_is_a_server_span_of_the_caller(monkeypatch):
    exported = TracerProvider().get_tracer("test")
    monkeypatch.setattr(tracing, "tracer", exported)
    monkeypatch.setattr(tracing._Exporting, "value", True)
    with tracing.request_span("POST /x", {"traceparent": CALLER}, lambda: {"http.route": "/x"}) as span:
        assert trace.get_current_span() is span and span.is_recording() and span.kind == SpanKind.SERVER
        assert span.attributes["http.route"] == "/x"
        assert (span.parent.trace_id, span.parent.span_id) == (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)
