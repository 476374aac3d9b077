"""`python -m app workers` (make run WORKERS=N): N workers on consecutive ports, stopped together."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from deploy.local.processes import free_ports, port_is_free
from tests.integration.conftest import wait_until
from tests.worker_process import REPO


def consecutive_free_ports(count: int) -> int:
    """A base port with `count` free ports from it (picked as the stack picks, then the next ones checked)."""
    for _ in range(50):
        base = free_ports(1)[0]
        if base + count <= 65536 and all(port_is_free(port) for port in range(base, base + count)):
            return base
    pytest.fail("no run of free ports")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_two_workers_on_consecutive_ports_share_the_work_and_stop_together(namespace, http, tmp_path,
                                                                               stop_signal):
    base = consecutive_free_ports(2)
    log = tmp_path / "workers.log"
    env = namespace.env(WORKER_DATA_DIR=str(tmp_path / "data" / "{conf.web_port}"))
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "app", "workers", "--count", "2", "--base-port", str(base)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        async def both_ready():
            lines = log.read_text(errors="replace").splitlines()
            return all(any(line.startswith(f"[:{port}] ") and "[^Worker]: Ready" in line for line in lines)
                       for port in (base, base + 1))

        await wait_until(both_ready, 120, "two workers ready")
        assert launcher.poll() is None
        async with http.post(f"http://127.0.0.1:{base}/api/v1/timestamp/2009-09-28T19:03:12Z") as response:
            assert response.status == 200
            command_id = (await response.json())["id"]

        async def served_by_the_other():
            async with http.get(f"http://127.0.0.1:{base + 1}/api/v1/timestamp/{command_id}") as response:
                return response.status == 200 and (await response.json())["event_timestamp"] == "2009-09-28T19:03:12Z"

        await wait_until(served_by_the_other, 60, "the command served by the second worker")
        assert (tmp_path / "data" / str(base)).is_dir() and (tmp_path / "data" / str(base + 1)).is_dir()

        launcher.send_signal(stop_signal)
        code = launcher.wait(60)  # SHUTDOWN_TIMEOUT_SECONDS (30) + the launcher's margin bound it
        assert code == 0, log.read_text(errors="replace")[-3000:]
        text = log.read_text(errors="replace")
        assert f"workers stopped: :{base} exit 0, :{base + 1} exit 0" in text, text[-3000:]
        for port in (base, base + 1):  # nothing listens any more
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_refuses_a_shared_data_directory(namespace, tmp_path):
    env = namespace.env(WORKER_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-m", "app", "workers", "--count", "2"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "WORKER_DATA_DIR" in result.stderr and "{conf.web_port}" in result.stderr


async def test_faust_datadir_flag_is_where_the_worker_keeps_its_state(namespace, tmp_path):
    """`faust --datadir DIR -A app.main worker`: the flag wins over WORKER_DATA_DIR."""
    from tests.worker_process import Worker

    class FlaggedWorker(Worker):
        def command(self) -> list[str]:
            return [sys.executable, "-m", "faust", "--datadir", str(tmp_path / "flagged"), "-A", "app.main",
                    "worker", "--web-host", "127.0.0.1", "--web-port", str(self.port), "-l", "info"]

    worker = FlaggedWorker(namespace.env(TABLE_STORE="rocksdb://"), tmp_path / "flagged.log").start()
    try:
        await worker.wait_ready(90)
        assert (tmp_path / "flagged").is_dir() and any((tmp_path / "flagged").iterdir())
        assert not (tmp_path / f"data-{worker.port}").exists()  # the WORKER_DATA_DIR Worker sets, unused
    finally:
        worker.stop()
