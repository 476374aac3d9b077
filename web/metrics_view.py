"""GET /metrics: Prometheus text format of the default registry (ours and Faust's)."""

from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.faust_app import app


@app.page("/metrics")
class Metrics(View):
    async def get(self, request: Request) -> Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
