"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Spans are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the
traces-specific variable) is set; otherwise they are created but not exported.
One trace per command: HTTP server span -> Kafka produce span (W3C traceparent
in the message headers) -> processing span in the agent -> database write span.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterable, Mapping, Sequence

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind

tracer = trace.get_tracer("timestamp-pipeline")
_ids = RandomIdGenerator()


class _Exporting:
    """Whether finished spans go anywhere: an OTLP endpoint is set, or a provider was installed before ours."""

    value = False


def setup_tracing(service_name: str) -> None:
    """Install the SDK tracer provider (once per process).

    Its sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    (default: parentbased_always_on). Without an exporter an HTTP request's span
    is only its ids (`request_span`), for the trace ids in the logs and the
    traceparent sent on; the per-event spans of the agent are not made at all,
    and what else goes through the tracer records nothing (`local_sampler`).
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

    A span nothing exports needs only its ids. A non-recording span has them,
    without the attributes, timing and processors of a recorded one (7.7 µs
    instead of 18.2; docs/performance.md, "HTTP tails"); an HTTP request does
    without the tracer altogether (`request_span`).
    """
    return None if exporting else ALWAYS_OFF


def request_span(name: str, headers: Mapping[str, str], attributes: Callable[[], dict]):
    """The current span of an HTTP request, continuing the caller's traceparent.

    Exported: a SERVER span with `attributes()`. Unexported, only its ids are
    used (the logs' trace.id, the traceparent a POST sends on), so they are made
    without the tracer: a non-recording span through the SDK's sampler cost a
    request 3.4 times as much (docs/performance.md, "POST against Faust's floor").
    """
    if _Exporting.value:
        return tracer.start_as_current_span(name, context=propagate.extract(headers), kind=SpanKind.SERVER,
                                            attributes=attributes())
    caller = (trace.get_current_span(propagate.extract(headers)).get_span_context()
              if "traceparent" in headers else None)
    if caller is not None and caller.is_valid:
        ids = SpanContext(caller.trace_id, _ids.generate_span_id(), is_remote=False, trace_state=caller.trace_state)
    else:
        ids = SpanContext(_ids.generate_trace_id(), _ids.generate_span_id(), is_remote=False)
    return _CurrentSpan(NonRecordingSpan(ids))


class _CurrentSpan:
    """The span current within the block: `trace.use_span(span, end_on_exit=False)` for a span that
    records nothing, whose exceptions are not recorded anyway; a class rather than a generator, at
    about half the cost, since every request enters one. Single use: enter each instance once."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        self.token = context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, *exc_info: object) -> None:
        context.detach(self.token)


def publish_span(topic: str, command_id: str):
    """The PRODUCER span around a POST's publish when spans are exported; otherwise no span.

    Unexported, the command's traceparent names the request's span, which carries
    the same trace id, and nothing downstream makes a span of it: a second
    non-recording span would only cost the POST its time.
    """
    if not _Exporting.value:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic,
                    "messaging.operation": "publish", "messaging.message.id": command_id},
    )


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
