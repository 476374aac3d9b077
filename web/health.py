"""Health views."""

from faust.web import Request, Response, View

from app.main import app


@app.page("/health")
class Health(View):
    """Process is up and serving HTTP (kept for the seed's clients)."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "UP"})
