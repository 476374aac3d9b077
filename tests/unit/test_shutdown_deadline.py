"""The shutdown deadline ends a process whose stopping hangs, whatever the event loop is doing."""

import subprocess
import sys
import time

from tests.worker_process import REPO

HANGING = """
import logging, time
from app.lifecycle import ShutdownDeadline
logging.basicConfig()  # a worker's logging is set up by Faust
ShutdownDeadline(1.0).start()
time.sleep(60)  # a stop that never finishes, the event loop blocked too
"""


def test_a_stop_that_hangs_ends_at_the_deadline():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", HANGING], cwd=REPO, capture_output=True, text=True, timeout=30,
                            env={"TABLE_STORE": "memory://", "LOG_FORMAT": "text", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15
    assert "Shutdown did not finish within 1 s" in result.stderr + result.stdout
