"""The worker's OpenAPI document, fuzzed against a live worker with schemathesis.

This module is also the schemathesis hooks module of that run (SCHEMATHESIS_HOOKS):
importing it registers the document's custom string format.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import schemathesis
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((REPO / "web" / "openapi.json").read_text())
CORRELATION_ID = DOCUMENT["components"]["schemas"]["CorrelationId"]

# Schemathesis' coverage phase builds header values from letters and digits only, so it
# finds no valid correlation id (one needs '-') and sends invalid ones as valid, unless
# the value's format has a generator of its own: strings of the document's pattern.
schemathesis.openapi.format("correlation-id", st.from_regex(CORRELATION_ID["pattern"], fullmatch=True))

# The document declares the only link (POST -> getTimestamp with the answered id). Link
# inference would add wrong ones: the Location /api/v1/timestamp/<id> also matches
# POST /api/v1/timestamp/{value}, whose value is a timestamp, and the shared {value} links
# a POSTed timestamp to the GET, which takes an id; both would be sent as valid requests.
CONFIG = """
[phases.stateful.inference]
algorithms = []
"""


async def test_schemathesis_finds_no_failure_of_any_check(workers, http, tmp_path):
    worker = await workers().wait_ready()
    async with http.get(f"{worker.url}/openapi.json") as response:
        assert response.status == 200
        assert (await response.json()) == DOCUMENT
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [cli, "--config-file", str(config), "run", f"{worker.url}/openapi.json",
         "--checks", "all", "--mode", "all", "--max-examples", "40", "--generation-deterministic",
         "--report-har-path", str(tmp_path / "schemathesis.har")],
        capture_output=True, text=True, timeout=300,
        # Out of the work tree: schemathesis keeps a cache of past failures in its cwd.
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "SCHEMATHESIS_HOOKS": __name__},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout.split("SUMMARY")[-1]
    assert "Tested: 9" in summary and "No issues found" in summary, summary
    assert re.search(r"API Links: +(\d+) covered / \1 selected", result.stdout), result.stdout[-3000:]

