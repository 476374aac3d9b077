"""A `faust -A app.main worker` subprocess, for the integration tests, the bench and the chaos run (chaos/run.py)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.processes import free_ports

REPO = Path(__file__).resolve().parents[1]
LEVELS_THAT_LOG_READY = ("DEBUG", "INFO")


def free_port() -> int:
    return free_ports(1)[0]


@dataclass
class Worker:
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    data_dir: Path | None = None  # WORKER_DATA_DIR; by default data-<port> next to the log
    log_start: int = 0  # where this start's lines begin in the log (it may hold an earlier run's)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "faust", "-A", "app.main", "worker",
                "--web-host", "127.0.0.1", "--web-port", str(self.port), "-l", "info"]

    def start(self) -> "Worker":
        self.log_file = open(self.log_path, "ab")
        self.log_start = self.log_file.tell()
        env = {**self.env, "WORKER_DATA_DIR": str(self.data_dir or self.log_path.parent / f"data-{self.port}")}
        if env.get("LOG_LEVEL", "INFO").upper() not in LEVELS_THAT_LOG_READY:
            # wait_ready reads Faust's INFO line: a LOG_LEVEL=WARNING in the caller's shell would hide it, and
            # every start would time out after minutes with nothing in the log to say why.
            env["LOG_LEVEL"] = "INFO"
        self.process = subprocess.Popen(self.command(), cwd=REPO, env=env,
                                        stdout=self.log_file, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_since_start(self) -> bytes:
        """What this start of the worker has logged so far."""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start)
            return log.read()

    async def wait_ready(self, timeout: float = 60) -> "Worker":
        """Until the worker has joined its group and recovered its tables."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if b"[^Worker]: Ready" in self.log_since_start():
                return self
            await asyncio.sleep(0.2)
        raise TimeoutError(f"worker on port {self.port} not ready after {timeout}s; see {self.log_path}")

    def signal(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process:
            self.process.wait(10)

    def terminate(self, timeout: float = 40) -> tuple[int, float]:
        """SIGTERM, then (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        return code, time.monotonic() - started

    def stop(self, timeout: float = 30) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log_file", None):
            self.log_file.close()


@dataclass
class FaultyWorker(Worker):
    """A worker started by tests/faulty_worker.py, with the fault its env names (FAULT_STAGE, ...)."""

    def command(self) -> list[str]:
        return [sys.executable, str(REPO / "tests" / "faulty_worker.py"), "worker",
                "--web-host", "127.0.0.1", "--web-port", str(self.port), "-l", "info"]
