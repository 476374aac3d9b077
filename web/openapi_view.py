"""GET /openapi.json: the OpenAPI 3 document of this HTTP API (web/openapi.json)."""

from pathlib import Path

from aiohttp import web
from faust.web import Request, Response, View

from app.faust_app import app

DOCUMENT = (Path(__file__).parent / "openapi.json").read_bytes()


@app.page("/openapi.json")
class OpenApiDocument(View):
    async def get(self, request: Request) -> Response:
        return web.Response(body=DOCUMENT, content_type="application/json")
