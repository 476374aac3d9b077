"""N workers on one host, one per core: `python -m app workers --count 4` (`make run WORKERS=4`).

Each worker is a `faust -A app.main worker` process in the same consumer group
(APP_ID), with its own web port (BASE_PORT, BASE_PORT+1, ...) and so its own
data directory (WORKER_DATA_DIR, default data/{conf.web_port}). Their output is
printed with the port in front of each line.

Ctrl-C or SIGTERM stops them all: each gets SIGTERM and has
SHUTDOWN_TIMEOUT_SECONDS (plus a margin) to exit before it is killed; a second
Ctrl-C kills them at once. When one worker exits by itself, the others are
stopped too and the exit code is 1. Workers run in sessions of their own, so
a terminal's Ctrl-C reaches only this process, which stops them in order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from app.observability.logs import resolve_format
from app.settings import Settings

STOP_MARGIN_SECONDS = 10.0


class LaunchError(Exception):
    """The workers cannot be started as asked."""


def worker_command(host: str, port: int, log_level: str) -> list[str]:
    return [sys.executable, "-m", "faust", "-A", "app.main", "worker",
            "--web-host", host, "--web-bind", host, "--web-port", str(port), "-l", log_level.lower()]


def check_ports_free(host: str, ports: list[int]) -> None:
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise LaunchError(f"port {port} on {host} is not free ({exc.strerror}); choose another --base-port")


def _relay(prefix: str, source: IO[bytes], sink: IO[bytes], lock: threading.Lock) -> None:
    for line in iter(source.readline, b""):
        with lock:
            sink.write(prefix + line)
            sink.flush()


class Workers:
    def __init__(self, count: int, base_port: int, host: str, log_level: str | None, settings: Settings) -> None:
        if count < 1:
            raise LaunchError("--count must be at least 1")
        if count > 1 and "{conf.web_port}" not in settings.worker_data_dir:
            raise LaunchError(f"WORKER_DATA_DIR={settings.worker_data_dir!r} would be shared by the workers: "
                              "include {conf.web_port} in it (the default, data/{conf.web_port}, does)")
        if count > settings.command_topic_partitions:
            print(f"note: {count} workers for {settings.command_topic_partitions} partitions: "
                  f"{count - settings.command_topic_partitions} will have nothing to consume", file=sys.stderr)
        self.ports = [base_port + i for i in range(count)]
        self.host, self.settings = host, settings
        self.log_level = (log_level or settings.log_level).upper()
        self.processes: dict[int, subprocess.Popen] = {}
        self.stop_requests = 0

    def environment(self) -> dict[str, str]:
        """This process's environment, with the log settings the workers need spelled out."""
        env = dict(os.environ)
        if self.settings.log_format == "auto":
            # The workers write to a pipe; keep the format this terminal would get.
            env["LOG_FORMAT"] = resolve_format("auto", sys.stdout)
        # The worker's logging config takes its level from LOG_LEVEL; Faust's -l alone would be ignored.
        env["LOG_LEVEL"] = self.log_level
        return env

    def start(self) -> None:
        check_ports_free(self.host, self.ports)
        env = self.environment()
        lock = threading.Lock()
        for port in self.ports:
            process = subprocess.Popen(worker_command(self.host, port, self.log_level), env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            self.processes[port] = process
            threading.Thread(target=_relay, args=(f"[:{port}] ".encode(), process.stdout, sys.stdout.buffer, lock),
                             daemon=True).start()
        print(f"started {len(self.ports)} workers in consumer group {self.settings.app_id!r}: "
              + ", ".join(f"http://{self.host}:{p} (pid {self.processes[p].pid})" for p in self.ports),
              file=sys.stderr, flush=True)

    def request_stop(self, signum: int, frame=None) -> None:
        self.stop_requests += 1
        if self.stop_requests == 1:
            print(f"{signal.Signals(signum).name}: stopping {len(self.running())} workers "
                  f"(at most {self.settings.shutdown_timeout_seconds:.0f} s; again to kill them)",
                  file=sys.stderr, flush=True)
            self._signal_all(signal.SIGTERM)
        else:
            self._signal_all(signal.SIGKILL)

    def running(self) -> list[subprocess.Popen]:
        return [p for p in self.processes.values() if p.poll() is None]

    def _signal_all(self, sig: int) -> None:
        for process in self.running():
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, poll_seconds: float = 0.2) -> int:
        """Until every worker has exited; the exit code of the launcher."""
        failed = None
        while not self.stop_requests:
            exited = [(port, p.returncode) for port, p in self.processes.items() if p.poll() is not None]
            if exited:
                failed = exited[0]
                print(f"worker on port {failed[0]} exited with {failed[1]}; stopping the others",
                      file=sys.stderr, flush=True)
                self.stop_requests = 1
                self._signal_all(signal.SIGTERM)
                break
            time.sleep(poll_seconds)
        deadline = time.monotonic() + self.settings.shutdown_timeout_seconds + STOP_MARGIN_SECONDS
        while self.running():
            if time.monotonic() > deadline:
                print("workers still running after the shutdown timeout: killing them", file=sys.stderr, flush=True)
                self._signal_all(signal.SIGKILL)
                deadline = float("inf")
            time.sleep(poll_seconds)
        codes = {port: p.returncode for port, p in self.processes.items()}
        print("workers stopped: " + ", ".join(f":{port} exit {code}" for port, code in codes.items()),
              file=sys.stderr, flush=True)
        return 1 if failed is not None or any(codes.values()) else 0


def run(count: int, base_port: int, host: str, log_level: str | None, settings: Settings) -> int:
    workers = Workers(count, base_port, host, log_level, settings)
    signal.signal(signal.SIGINT, workers.request_stop)
    signal.signal(signal.SIGTERM, workers.request_stop)
    workers.start()
    return workers.wait()
