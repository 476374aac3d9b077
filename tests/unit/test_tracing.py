"""app.observability.tracing: without an exporter, spans keep their ids but record nothing."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

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
