"""Chaos run: drive events through the pipeline while injecting faults, then audit.

    make chaos                       # 100,000 events
    make chaos CHAOS_EVENTS=5000

Everything runs on this machine: a broker and a PostgreSQL server of its own
(started from the stack's jars and binaries in a temporary directory), and
workers as subprocesses on loopback. Half the events are POSTed over HTTP (with
an Idempotency-Key, retried until acknowledged), half are produced straight to
the topic, 1% of those invalid. Faults, in order, while the load runs: scale
1 -> 3 workers, SIGKILL of a worker mid-batch (then restarted), PostgreSQL
restart, broker restart, scale 3 -> 1. Then the audit: every acknowledged id in
PostgreSQL exactly once, processed_events agreeing, the table agreeing with
PostgreSQL on sampled ids, the dead-letter topic holding exactly the invalid
messages. Bounded by `deadline` seconds; stops its processes in any case.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psycopg2
from aiokafka import AIOKafkaProducer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.dead_letters import read_dead_letters  # noqa: E402
from app.topics import ensure_topic  # noqa: E402
from tests.worker_process import Worker  # noqa: E402

_spec = importlib.util.spec_from_file_location("stack", REPO / "deploy/local/stack.py")
stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stack)

TOPIC = "chaos.timestamp.command.v1"


@dataclass
class Report:
    events: int
    faults: list[tuple[str, float]] = field(default_factory=list)  # name, seconds to recover
    lost: int = 0
    duplicated: int = 0
    table_mismatches: int = 0
    dead_letter_mismatches: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.table_mismatches or self.dead_letter_mismatches)

    def lines(self) -> list[str]:
        lines = [f"events:            {self.events}", f"faults injected:   {len(self.faults)}"]
        lines += [f"  {name:<24} recovered in {seconds:5.1f} s" for name, seconds in self.faults]
        lines += [f"lost:              {self.lost}", f"duplicated:        {self.duplicated}",
                  f"table mismatches:  {self.table_mismatches}",
                  f"dead-letter diffs: {self.dead_letter_mismatches}", f"seconds:           {self.seconds:.1f}"]
        return lines


class Chaos:
    def __init__(self, events: int, workdir: Path, deadline: float) -> None:
        self.events = events
        self.workdir = workdir
        self.deadline = time.monotonic() + deadline
        self.acknowledged: dict[str, str] = {}  # id -> event_timestamp
        self.invalid_values: set[bytes] = set()
        self.workers: list[Worker] = []
        self.sent = 0

    # -- infrastructure -------------------------------------------------------
    def start_infrastructure(self) -> None:
        libs = os.environ.get("STACK_KAFKA_LIBS") or str(REPO / ".stack/kafka/libs")
        self.broker = stack.start_kafka(self.workdir / "broker", libs_dir=Path(libs))
        self.postgres = stack.start_postgres(self.workdir / "pg")
        self.env = {
            **os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap, "DATABASE_URL": self.postgres.url,
            "APP_ID": "chaos-pipeline", "COMMAND_TOPIC": TOPIC, "TABLE_STORE": "memory://",
            "BATCH_SIZE": "500", "BATCH_MAX_WAIT_SECONDS": "0.1", "PUBLISH_TIMEOUT_SECONDS": "3",
            "CIRCUIT_BREAKER_RESET_SECONDS": "2", "DATABASE_RETRY_MAX_SECONDS": "1", "LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }

    def stop_infrastructure(self) -> None:
        for worker in self.workers:
            worker.stop()
        stack.stop_kafka(self.workdir / "broker", kill=True)
        stack.stop_postgres(self.workdir / "pg")

    def query(self, sql: str) -> list[tuple]:
        with psycopg2.connect(self.postgres.url) as conn, conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        return rows

    def stored(self) -> int:
        try:
            return self.query("SELECT count(*) FROM timestamp_records")[0][0]
        except psycopg2.Error:
            return -1

    async def add_worker(self) -> Worker:
        worker = Worker(self.env, self.workdir / f"worker-{len(self.workers)}.log").start()
        self.workers.append(worker)
        await worker.wait_ready(timeout=90)
        return worker

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.process.poll() is None]

    # -- load -----------------------------------------------------------------
    async def post_load(self, count: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            queue = list(range(count))

            async def client():
                while queue and time.monotonic() < self.deadline:
                    i = queue.pop()
                    timestamp = f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i // 60) % 60:02d}Z"
                    while time.monotonic() < self.deadline:
                        workers = self.live_workers()
                        if not workers:
                            await asyncio.sleep(0.2)
                            continue
                        try:
                            async with session.post(f"{random.choice(workers).url}/api/v1/timestamp/{timestamp}",
                                                    headers={"Idempotency-Key": f"chaos-{i}"}) as response:
                                if response.status == 200:
                                    self.acknowledged[(await response.json())["id"]] = timestamp
                                    self.sent += 1
                                    break
                        except (aiohttp.ClientError, asyncio.TimeoutError):
                            pass
                        await asyncio.sleep(0.2)

            await asyncio.gather(*(client() for _ in range(16)))

    async def produce_load(self, count: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all",
                                    enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            for start in range(0, count, 500):
                # Made once per chunk: a chunk resent after a broker restart repeats
                # the same ids and values, so copies that got through are no extras.
                chunk = []
                for i in range(start, min(count, start + 500)):
                    if i % 100 == 99:
                        chunk.append((None, f"chaos {i}: not json".encode()))
                    else:
                        command_id = str(uuid.uuid4())
                        value = json.dumps({"command_id": command_id, "event_timestamp": "2021-01-01T00:00:00Z"})
                        chunk.append((command_id, value.encode()))
                while True:
                    try:
                        pending = [(command_id, value, await producer.send(
                            TOPIC, value, key=command_id.encode() if command_id else None))
                            for command_id, value in chunk]
                        for command_id, value, future in pending:
                            await future
                            if command_id is None:
                                self.invalid_values.add(value)
                            else:
                                self.acknowledged[command_id] = "2021-01-01T00:00:00Z"
                        self.sent += len(chunk)
                        break
                    except Exception:  # the broker restarts under us: resend this chunk
                        if time.monotonic() > self.deadline:
                            raise
                        await asyncio.sleep(0.5)
                await asyncio.sleep(0)
        finally:
            await producer.stop()

    # -- faults ---------------------------------------------------------------
    async def until_sent(self, fraction: float) -> None:
        while self.sent < self.events * fraction and time.monotonic() < self.deadline:
            await asyncio.sleep(0.1)

    async def progressing(self, since: float) -> float:
        """Seconds from `since` until rows are being stored again."""
        before = self.stored()
        while time.monotonic() < self.deadline:
            now = self.stored()
            if now > before >= 0 or (now >= 0 and now >= len(self.acknowledged)):
                return time.monotonic() - since
            before = max(before, now)
            await asyncio.sleep(0.2)
        raise TimeoutError("no progress after fault")

    async def faults(self, report: Report) -> None:
        await self.until_sent(0.15)
        started = time.monotonic()
        await asyncio.gather(self.add_worker(), self.add_worker())
        report.faults.append(("scale 1 -> 3", await self.progressing(started)))

        await self.until_sent(0.35)
        victim = self.live_workers()[-1]
        started = time.monotonic()
        victim.kill()
        await self.add_worker()
        report.faults.append(("SIGKILL a worker", await self.progressing(started)))

        await self.until_sent(0.5)
        started = time.monotonic()
        await asyncio.to_thread(stack.stop_postgres, self.workdir / "pg")
        await asyncio.sleep(2)
        await asyncio.to_thread(stack.start_postgres, self.workdir / "pg")
        report.faults.append(("PostgreSQL restart", await self.progressing(started)))

        await self.until_sent(0.65)
        started = time.monotonic()
        await asyncio.to_thread(stack.stop_kafka, self.workdir / "broker")
        await asyncio.sleep(2)
        libs = os.environ.get("STACK_KAFKA_LIBS") or str(REPO / ".stack/kafka/libs")
        await asyncio.to_thread(stack.start_kafka, self.workdir / "broker", libs_dir=Path(libs))
        report.faults.append(("broker restart", await self.progressing(started)))

        await self.until_sent(0.8)
        started = time.monotonic()
        for worker in self.live_workers()[1:]:
            worker.stop()
        report.faults.append(("scale 3 -> 1", await self.progressing(started)))

    # -- audit ----------------------------------------------------------------
    async def audit(self, report: Report) -> None:
        expected = len(self.acknowledged)
        settle = min(self.deadline, time.monotonic() + 180)
        while self.stored() < expected and time.monotonic() < settle:
            await asyncio.sleep(1)
        stored = dict(self.query("SELECT id::text, count(*) FROM timestamp_records GROUP BY id"))
        report.lost = len(set(self.acknowledged) - set(stored))
        report.duplicated = sum(n - 1 for n in stored.values()) + len(set(stored) - set(self.acknowledged))
        persisted = dict(self.query(
            "SELECT event_id::text, count(*) FROM processed_events WHERE status = 'persisted' GROUP BY event_id"))
        report.duplicated += sum(1 for n in persisted.values() if n != 1)
        report.lost += len(set(stored) - set(persisted))

        sample = random.sample(sorted(self.acknowledged), min(200, expected))
        timestamps = dict(self.query("SELECT id::text, to_char(event_timestamp AT TIME ZONE 'UTC', "
                                     "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM timestamp_records"))
        async with aiohttp.ClientSession() as session:
            for command_id in sample:
                async with session.get(f"{self.live_workers()[0].url}/api/v1/timestamp/{command_id}") as response:
                    body = await response.json() if response.status == 200 else {}
                if body.get("event_timestamp") != timestamps.get(command_id):
                    report.table_mismatches += 1

        # Dead letters are delivered at least once: compare the distinct values.
        letters = await read_dead_letters(self.broker.bootstrap, f"{TOPIC}.dlq")
        report.dead_letter_mismatches = len({r.value for r in letters} ^ self.invalid_values)

    async def run(self) -> Report:
        report = Report(self.events)
        started = time.monotonic()
        await asyncio.to_thread(self.start_infrastructure)
        try:
            await ensure_topic(self.broker.bootstrap, TOPIC, 8, 1, {"retention.ms": "-1"})
            await self.add_worker()
            await asyncio.gather(self.post_load(self.events // 2), self.produce_load(self.events - self.events // 2),
                                 self.faults(report))
            await self.audit(report)
        finally:
            report.seconds = time.monotonic() - started
            await asyncio.to_thread(self.stop_infrastructure)
        return report


def run(events: int, deadline: float, workdir: Path | None = None) -> Report:
    with tempfile.TemporaryDirectory(prefix="chaos-", dir=workdir) as tmp:
        return asyncio.run(Chaos(events, Path(tmp), deadline).run())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--deadline", type=float, default=1800, help="seconds before the run gives up")
    args = parser.parse_args()
    result = run(args.events, args.deadline)
    print("\n".join(result.lines()))
    sys.exit(0 if result.ok else 1)
