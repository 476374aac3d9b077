"""TEST-ONLY launcher: a worker whose finished spans can be read over HTTP.

    python tests/integration/traced_worker.py worker --web-host 127.0.0.1 --web-port PORT -l info

Installs an SDK TracerProvider exporting to memory *before* the worker starts
(so `setup_tracing`, at worker start, keeps it), adds the page GET /test/spans listing the
finished spans, then runs the Faust CLI of `app.main.app`. Used by
tests/integration/test_tracing.py; never deploy it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `app` is importable

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from faust.web import Request, Response, View  # noqa: E402

from app.main import app  # noqa: E402


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


@app.page("/test/spans")
class FinishedSpans(View):
    """The spans finished so far in this process."""

    async def get(self, request: Request) -> Response:
        return self.json([
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": _hex(span.context.trace_id, 32),
                "span_id": _hex(span.context.span_id, 16),
                "parent_id": _hex(span.parent.span_id, 16) if span.parent is not None else None,
                "attributes": {key: value for key, value in (span.attributes or {}).items()
                               if isinstance(value, (str, int, float, bool))},
            }
            for span in exporter.get_finished_spans()
        ])


if __name__ == "__main__":
    app.main()  # the Faust CLI, reading sys.argv
