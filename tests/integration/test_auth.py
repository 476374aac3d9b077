"""Optional API-key authentication, configured from a secret file."""

from __future__ import annotations

import pytest


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text("# one key per line\nfirst-secret-key\nsecond-secret-key\n")
    return path


async def test_writes_need_a_key_reads_and_probes_do_not(workers, http, key_file):
    worker = await workers(API_KEYS_FILE=str(key_file)).wait_ready()
    url = f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z"
    async with http.post(url) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["error"] == "unauthorized"
    async with http.post(url, headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    async with http.post(url, headers={"Authorization": "Bearer second-secret-key"}) as response:
        assert response.status == 200
        command_id = (await response.json())["id"]
    async with http.post(url, headers={"X-API-Key": "first-secret-key"}) as response:
        assert response.status == 200
    async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
        assert response.status in (200, 404)
    for path in ("/health/live", "/metrics", "/openapi.json"):
        async with http.get(f"{worker.url}{path}") as response:
            assert response.status == 200, path


async def test_all_endpoints_protected_when_asked(workers, http, key_file):
    worker = await workers(API_KEYS="inline-key", AUTH_PROTECT="all").wait_ready()
    some_id = "add1f52d-7c56-4c9f-b319-1a266c355f6b"
    async with http.get(f"{worker.url}/api/v1/timestamp/{some_id}") as response:
        assert response.status == 401
    async with http.get(f"{worker.url}/api/v1/timestamp/{some_id}", headers={"X-API-Key": "inline-key"}) as response:
        assert response.status == 404
    async with http.get(f"{worker.url}/health/ready") as response:
        assert response.status == 200


def test_missing_key_file_stops_the_worker_with_the_variable_named(namespace, tmp_path):
    import subprocess
    import sys

    from tests.worker_process import REPO

    from tests.worker_process import free_port

    # Read when the worker starts (app.main.start_worker), not at import.
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app.main", "worker", "--web-host", "127.0.0.1",
                             "--web-port", str(free_port())], cwd=REPO, capture_output=True, text=True,
                            env=namespace.env(API_KEYS_FILE=str(tmp_path / "absent"),
                                              WORKER_DATA_DIR=str(tmp_path / "data")), timeout=60)
    assert result.returncode != 0
    assert "API_KEYS_FILE=" in result.stderr and "no such file" in result.stderr


async def test_faust_table_and_router_pages_are_not_served(workers, http):
    """They would show table rows and the key-to-worker map to anyone, past the API and its keys."""
    worker = await workers().wait_ready()
    async with http.post(f"{worker.url}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
        command_id = (await response.json())["id"]
    for path in ("/table/", "/table/timestamps/", f"/table/timestamps/{command_id}/", "/router/",
                 f"/router/timestamps/{command_id}/"):
        async with http.get(f"{worker.url}{path}") as response:
            assert response.status == 404, path
            assert (await response.json())["error"] == "not_found", path
