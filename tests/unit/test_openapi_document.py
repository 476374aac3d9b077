"""web/openapi.json: every $ref resolves, and its paths are exactly the routes the worker serves."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.worker_process import REPO

DOCUMENT = json.loads((REPO / "web" / "openapi.json").read_text())
OPERATION_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# Served by our views but not described in the document: the document itself.
UNDOCUMENTED = {("GET", "/openapi.json")}

# In a process of its own: importing app.main registers Faust's sensors and our collector
# in the default Prometheus registry, patches aiohttp and sets up tracing.
# Only public API: Web.init_server() (what a starting worker calls; it adds Faust's
# built-in blueprints), the aiohttp application Faust serves (Web.web_app) and its
# router, and Web.views (path -> view instance, filled by @app.page).
ROUTES = """
import json
from app.main import app

app.web.init_server()
routes = []
for route in app.web.web_app.router.routes():
    path = route.resource.canonical
    view = app.web.views.get(path)
    routes.append([route.method, path, type(view).__module__ if view is not None else None])
print(json.dumps(routes))
"""


def served_routes() -> list[tuple[str, str, str | None]]:
    result = subprocess.run([sys.executable, "-c", ROUTES], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"TABLE_STORE": "memory://", "LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(route) for route in json.loads(result.stdout.splitlines()[-1])]


def test_every_ref_resolves_and_every_component_is_used():
    refs = set()

    def collect(node):
        if isinstance(node, dict):
            if "$ref" in node:
                assert set(node) == {"$ref"}, f"OpenAPI 3.0 ignores the siblings of a $ref: {node}"
                refs.add(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(DOCUMENT)
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        node = DOCUMENT
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
    declared = {f"#/components/{section}/{name}"
                for section, entries in DOCUMENT["components"].items() if section != "securitySchemes"
                for name in entries}
    assert declared - refs == set(), "components nothing refers to"


def test_paths_and_methods_are_the_routes_the_worker_serves():
    routes = served_routes()
    ours = {(method, path) for method, path, module in routes if module and module.startswith("web.")}
    others = {(method, path, module) for method, path, module in routes if (method, path) not in ours}
    # Faust's own blueprints (/router, /table, its index page) are not part of this API;
    # anything else would be a route nobody documents.
    assert {r for r in others if not (r[2] or "").startswith("faust.web.apps.")} == set()
    # Faust answers HEAD on every view (a GET's HEAD is the GET without its body; the
    # middleware answers 405 on the others): the document lists GET, not HEAD.
    served = {(method, path) for method, path in ours if method != "HEAD"} - UNDOCUMENTED
    documented = {(method.upper(), path) for path, item in DOCUMENT["paths"].items()
                  for method in item if method in OPERATION_METHODS}
    assert documented - served == set(), "documented in web/openapi.json, but no view serves it"
    assert served - documented == set(), "served by a view in web/, but not in web/openapi.json"
    assert UNDOCUMENTED <= {(method, path) for method, path in ours}, "UNDOCUMENTED names a route no longer served"
