"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Spans are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the
traces-specific variable) is set; otherwise they are created but not exported.
One trace per command: HTTP server span -> Kafka produce span (W3C traceparent
in the message headers) -> processing span in the agent -> database write span.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import Link, Span, SpanKind

tracer = trace.get_tracer("timestamp-pipeline")


class _Exporting:
    """Whether finished spans go anywhere: an OTLP endpoint is set, or a provider was installed before ours."""

    value = False


def setup_tracing(service_name: str) -> None:
    """Install the SDK tracer provider (once per process).

    Its sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    (default: parentbased_always_on). Without an exporter the HTTP spans are
    made non-recording (`local_sampler`), for the trace ids in the logs and the
    traceparent sent on; the per-event spans of the agent are not made at all.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        _Exporting.value = True
        return
    # Resource.create honours OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                              sampler=local_sampler(exporting))
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _Exporting.value = True
    trace.set_tracer_provider(provider)


def local_sampler(exporting: bool) -> Sampler | None:
    """None (OTEL_TRACES_SAMPLER's) when spans are exported; otherwise a sampler that records none.

    A span nothing exports needs only its ids: the trace id for the logs, and the
    context a POST sends on in traceparent (continuing the caller's trace id). A
    non-recording span has them, without the attributes, timing and processors of a
    recorded one: 7.7 µs a request instead of 18.2 (docs/performance.md, "HTTP tails").
    """
    return None if exporting else ALWAYS_OFF


def inject_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items()]


def extract_context(headers: Iterable[tuple[str, bytes]] | None):
    """Trace context carried in Kafka headers (Faust consumes in another thread,
    so nothing propagates it for us)."""
    carrier = {}
    for key, value in headers or ():
        if key in ("traceparent", "tracestate") and isinstance(value, bytes):
            try:
                carrier[key] = value.decode("ascii")
            except UnicodeDecodeError:
                continue
    return propagate.extract(carrier)


def start_processing_spans(topic: str, headers_per_event: Sequence) -> list[Span]:
    """One consumer span per event, each a child of its producer's context.

    Nothing is made per event when no span would be exported; an event the
    sampler drops gets a non-recording span.
    """
    if not _Exporting.value:
        return [trace.INVALID_SPAN] * len(headers_per_event)
    return [
        tracer.start_span(
            f"process {topic}",
            context=extract_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.source.name": topic,
                        "messaging.operation": "process"},
        )
        for headers in headers_per_event
    ]


def database_write_span(processing: Sequence[Span]):
    """A span for the batch transaction: child of the first event's span, linked to the rest."""
    parent = trace.set_span_in_context(processing[0]) if processing else None
    return tracer.start_as_current_span(
        "INSERT timestamp_records",
        context=parent,
        kind=SpanKind.CLIENT,
        links=[Link(span.get_span_context()) for span in processing[1:] if span.is_recording()],
        attributes={"db.system": "postgresql", "db.operation.name": "INSERT",
                    "db.collection.name": "timestamp_records", "db.operation.batch.size": len(processing)},
    )
