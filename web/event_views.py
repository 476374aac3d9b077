"""GET /api/v1/events?correlation_id=...: what happened to the events of one request."""

from faust.web import Request, Response, View

from app.domain.correlation import InvalidCorrelationId, validate_correlation_id
from app.faust_app import app
from web.middleware import json_error


@app.page("/api/v1/events")
class ProcessedEventsView(View):
    """The processed_events rows of a correlation id (the seed's SQL look-up, as an endpoint)."""

    async def get(self, request: Request) -> Response:
        wanted = request.query.get("correlation_id")
        if not wanted:  # `?correlation_id=` looks for nothing: say so rather than "malformed"
            state = "is required" if wanted is None else "is empty"
            return json_error(400, "missing_correlation_id",
                              f"query parameter correlation_id {state}: give the correlation id to look up "
                              "('<SVC>:<uuid>' or a UUID)")
        try:
            validate_correlation_id(wanted)
        except InvalidCorrelationId as exc:
            return json_error(400, "invalid_correlation_id", str(exc))
        events = await app.services.database.fetch_processed_events(wanted)
        return self.json({"correlation_id": wanted, "events": [e.as_view() for e in events]})
