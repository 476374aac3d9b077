"""The worker's OpenAPI document, fuzzed against a live worker with schemathesis."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(workers, http, tmp_path):
    worker = await workers().wait_ready()
    async with http.get(f"{worker.url}/openapi.json") as response:
        assert response.status == 200
        assert (await response.json())["openapi"].startswith("3.")
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        [cli, "run", f"{worker.url}/openapi.json", "--checks", CHECKS, "--max-examples", "40",
         "--generation-deterministic", "--exclude-operation-id", "metrics",
         "--report-har-path", str(tmp_path / "schemathesis.har")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
