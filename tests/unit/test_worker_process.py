"""The test and bench harness's worker process (tests/worker_process.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from tests.worker_process import Worker


@dataclass
class ScriptWorker(Worker):
    """A Worker whose process is a short Python script instead of Faust."""

    script: str = ""

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script]


async def test_an_earlier_runs_ready_line_in_the_log_does_not_make_a_new_start_ready(tmp_path):
    # make soak twice in one checkout: the log is appended to, and held the first run's "Ready".
    log = tmp_path / "worker-0.log"
    log.write_bytes(b"[^Worker]: Ready\n")
    worker = ScriptWorker({}, log, script="import time; time.sleep(30)").start()
    try:
        with pytest.raises(TimeoutError):
            await worker.wait_ready(timeout=1.5)
    finally:
        worker.kill()


async def test_a_start_that_logs_ready_is_ready(tmp_path):
    log = tmp_path / "worker-0.log"
    log.write_bytes(b"an earlier run\n")
    worker = ScriptWorker({}, log, script="print('[^Worker]: Ready', flush=True); import time; time.sleep(30)")
    worker.start()
    try:
        assert await worker.wait_ready(timeout=20) is worker
        assert worker.log().startswith("an earlier run\n")
    finally:
        worker.kill()


@pytest.mark.parametrize("inherited, started_with", [("WARNING", "INFO"), ("error", "INFO"), ("DEBUG", "DEBUG"),
                                                      (None, None)])
async def test_a_log_level_that_would_hide_the_ready_line_is_lowered_to_info(tmp_path, inherited, started_with):
    env = {} if inherited is None else {"LOG_LEVEL": inherited}
    worker = ScriptWorker(env, tmp_path / "worker-0.log",
                          script="import os, time; print('[^Worker]: Ready', os.environ.get('LOG_LEVEL'), flush=True); "
                                 "time.sleep(30)")
    worker.start()
    try:
        await worker.wait_ready(timeout=20)
        assert worker.log().split() == ["[^Worker]:", "Ready", str(started_with)]
    finally:
        worker.kill()
