"""The live path's consumers over a pre-loaded topic: the bare Faust agent and the project's workers.

Each run gets a fresh consumer group (APP_ID) and, for the workers, a fresh
database, and is measured from the first batch (the bare agent) or the first
row in PostgreSQL (the workers) to the last of the topic's events: events per
second, and the CPU time (user + system) the processes spent in that interval
per event, read from /proc. Every process is stopped and every database
dropped before the function returns; the topics a run creates (changelog,
dead letters, Faust's internal ones) all contain `name` and are deleted by the
caller.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

from bench.ceilings import drop_database, fresh_database
from tests.worker_process import REPO, Worker

POLL_SECONDS = 0.25
UNUSED_DATABASE = "postgresql://unused@127.0.0.1/unused"  # for bench/bare_faust.py, which has none
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all its threads, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def thread_cpu_wait_seconds(pid: int) -> float | None:
    """Seconds the process's main thread (its event loop) was runnable but waited for a core, since it
    started; None on a kernel that does not keep scheduler statistics.

    The second field of /proc/<pid>/task/<pid>/schedstat: time on the scheduler's run
    queue. A request that arrives meanwhile waits too, for no work of its own.
    """
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except FileNotFoundError:
        return None


def machine_busy_and_stolen_seconds() -> tuple[float, float]:
    """CPU time every core spent on anything but idle and I/O wait since boot, and of that the time the
    hypervisor gave other guests while this machine's cores wanted it (steal), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().splitlines()[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, steal / CLOCK_TICKS


class CpuShare:
    """Cores used during a span, by one process and by the whole machine: what else the load competed with;
    and the share of the span the process's event-loop thread waited for a core (`loop_waited_for_cpu`), and
    the cores the hypervisor gave other guests meanwhile (`stolen`, part of `machine` and `rest`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.wall, self.process = time.monotonic(), process_cpu_seconds(pid)
        self.machine, self.steal = machine_busy_and_stolen_seconds()
        self.loop_wait = thread_cpu_wait_seconds(pid)

    def cores(self) -> dict:
        wall = time.monotonic() - self.wall
        process = process_cpu_seconds(self.pid) - self.process
        busy, stolen = machine_busy_and_stolen_seconds()
        machine = busy - self.machine
        return {"worker": round(process / wall, 2), "machine": round(machine / wall, 2),
                "rest": round((machine - process) / wall, 2),
                "loop_waited_for_cpu": self._loop_waited(wall),
                "stolen": round((stolen - self.steal) / wall, 3)}

    def _loop_waited(self, wall: float) -> float | None:
        waited = thread_cpu_wait_seconds(self.pid)
        return None if waited is None or self.loop_wait is None else round((waited - self.loop_wait) / wall, 3)


class BareFaustWorker(Worker):
    """bench/bare_faust.py as a worker process."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "faust", "-A", "bench.bare_faust", "worker",
                "--web-host", "127.0.0.1", "--web-port", str(self.port), "-l", "info"]


def worker_env(bootstrap: str, topic: str, app_id: str, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a bench worker: the caller's, then the bench's topic, group and database."""
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COMMAND_TOPIC": topic, "APP_ID": app_id,
            "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", **extra}


def summary(events: int, seconds: float, cpu_seconds: float, processes: int) -> dict:
    return {
        "processes": processes,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 3),
        "cpu_us_per_event": round(cpu_seconds / events * 1e6, 1),
    }


async def _started(workers: list[Worker], ready_timeout: float) -> None:
    for worker in workers:
        worker.start()
    await asyncio.gather(*(w.wait_ready(ready_timeout) for w in workers))


def _stop(workers: list[Worker], timeout: float = 40) -> None:
    """SIGTERM to all at once, then wait for each (SIGKILL after `timeout`)."""
    for worker in workers:
        worker.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        if worker.process is not None:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
        worker.stop()


async def measure_bare_faust(bootstrap: str, topic: str, events: int, name: str, workdir: Path,
                             timeout: float) -> dict:
    """bench/bare_faust.py over the topic, from its first batch to `events` acknowledged."""
    result_file = workdir / f"{name}.json"
    env = worker_env(bootstrap, topic, name, UNUSED_DATABASE,
                     BENCH_EVENTS=str(events), BENCH_RESULT_FILE=str(result_file))
    worker = BareFaustWorker(env, workdir / f"{name}.log")
    try:
        await _started([worker], ready_timeout=120)
        deadline = time.monotonic() + timeout
        while not result_file.exists():
            if worker.process.poll() is not None:
                raise RuntimeError(f"bare Faust agent exited with {worker.process.returncode}; see {worker.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare Faust agent did not reach {events} events in {timeout:.0f}s; "
                                   f"see {worker.log_path}")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        _stop([worker])
    measured = json.loads(result_file.read_text())
    return {**summary(measured["events"], measured["seconds"], measured["cpu_seconds"], 1),
            "stream_iterator": measured["stream_iterator"]}


async def measure_workers(bootstrap: str, server_url: str, topic: str, events: int, processes: int, name: str,
                          workdir: Path, timeout: float) -> dict:
    """`processes` project workers (fresh group, fresh database) until the topic's events are all rows."""
    database = name.replace("-", "_")
    url = fresh_database(server_url, database)
    workers = [Worker(worker_env(bootstrap, topic, name, url), workdir / f"{name}-{i}.log")
               for i in range(processes)]
    try:
        launched = (0, time.perf_counter(), 0.0, "launch")  # no worker process, no CPU used yet
        await _started(workers, ready_timeout=120)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            measured = await _until_rows(conn, workers, events, timeout, launched)
        finally:
            conn.close()
    finally:
        _stop(workers)
        drop_database(server_url, database)
    return measured


def _rows(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM timestamp_records")
        return cur.fetchone()[0]


def _cpu(workers: list[Worker]) -> float:
    return sum(process_cpu_seconds(w.process.pid) for w in workers)


async def _until_rows(conn, workers: list[Worker], events: int, timeout: float, launched: tuple) -> dict:
    """Poll the row count: (rows, time, CPU) at the first row seen and when all are there.

    A tiny run can be over before the first poll (the first of two workers
    processes everything while the second starts): it is measured from the
    launch of the workers instead, start-up included.
    """
    deadline = time.monotonic() + timeout
    first = None
    while True:
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.process.returncode}; see {worker.log_path}")
        try:
            rows = _rows(conn)
        except psycopg2.errors.UndefinedTable:
            rows = 0  # not migrated yet
        now, cpu = time.perf_counter(), _cpu(workers)
        if rows and first is None:
            first = (rows, now, cpu, "first_row")
        if rows >= events:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(workers)} worker(s) stored {rows} of {events} rows in {timeout:.0f}s; "
                               f"see {workers[0].log_path.parent}")
        await asyncio.sleep(POLL_SECONDS)
    if first[0] >= events:
        first = launched
    rows0, time0, cpu0, since = first
    return {**summary(rows - rows0, now - time0, cpu - cpu0, len(workers)), "measured_from": since}


__all__ = ["REPO", "measure_bare_faust", "measure_workers", "process_cpu_seconds", "worker_env"]
