"""Chaos run: drive events through the pipeline while injecting faults, then audit.

    make chaos                       # 100,000 events
    make chaos CHAOS_EVENTS=5000

Everything runs on this machine: a broker and a PostgreSQL server of its own
(started from the stack's jars and binaries in a temporary directory), and
workers as subprocesses on loopback. Half the events are POSTed over HTTP (with
an Idempotency-Key, retried until acknowledged), half are produced straight to
the topic, 1% of those invalid; GETs, a trickle of POSTs and of produced
commands (one per partition every 0.5 s) go on until the last fault is healed.
Every worker reaches Kafka and PostgreSQL only through its own Toxiproxy proxies
(chaos/toxiproxy.py; the broker advertises one listener per worker slot at that
slot's proxy port, docs/operations.md "Partial failures"). Faults, in order: scale
1 -> 3 workers, SIGKILL of a worker mid-batch (then restarted), a burst of
poison messages, PostgreSQL latency, PostgreSQL black hole, reset_peer on one
worker's PostgreSQL connections, Kafka latency + bandwidth on one worker, one
worker partitioned from Kafka, SIGSTOP of a worker past the session timeout, a
rolling restart, PostgreSQL restart, broker restart, the table store's disk
full (the slot-0 worker keeps a RocksDB table on a tmpfs of its own, which is
filled to the last page and then freed; needs root to mount), scale 3 -> 1;
with 50,000 events or more the proxy faults (latency .. rolling restart) run
twice. Per fault: seconds until readiness DOWN, an alert's metric moves or (a
planned scale step) a rebalance completes; seconds from healing until one new
command per partition is stored and every worker is ready; POST attempts
refused meanwhile. The run fails when anything is lost, doubled or unaudited,
or when a kind of fault was never detected.

The poison burst goes straight to every partition of the topic: hostile values
(tombstones, non-UTF-8, JSON that is not an object, 5000-deep nesting, non-UUID
ids, numeric and impossible timestamps, an oversized value, ...) and garbage
header values (non-UTF-8 or overlong correlation ids, broken trace context, null
header values), interleaved with valid commands, some of which carry the
garbage headers too. A few of those valid commands are marked: every worker of
the run is a tests/faulty_worker.py worker whose `enrich` raises for them
(FAULT_STAGE=enrich), so they must end as processing errors, not as rows.

Then the audit: every acknowledged id in PostgreSQL exactly once,
processed_events agreeing (each poison message `invalid`, each marked command
`failed`), the table agreeing with PostgreSQL on sampled ids, the dead-letter
topic holding exactly the invalid messages (each poison message once per
original position, the marked commands as `processing_error`), and the offset
audit (app.audit): no message below the group's committed offsets without a
processed_events row. Bounded by `deadline` seconds; stops its processes in
any case.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psycopg2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import deploy.local as stack  # noqa: E402
from app.adapters.kafka_client import client_options
from app.adapters.database import Database  # noqa: E402
from app.adapters.topics import ensure_topic  # noqa: E402
from app.domain.dead_letters import PROCESSING_ERROR, describe  # noqa: E402
from app.ops.audit import KafkaView, isolation_level  # noqa: E402
from app.ops.audit import audit as offset_audit  # noqa: E402
from app.ops.dead_letters import read_dead_letters  # noqa: E402
from chaos.toxiproxy import Toxiproxy, ToxiproxyServer, install  # noqa: E402
from deploy.local.processes import free_ports  # noqa: E402
from tests.worker_process import FaultyWorker, Worker  # noqa: E402

TOPIC = "chaos.timestamp.command.v1"
GROUP = "chaos-pipeline"  # APP_ID of the workers: Faust's consumer group
PARTITIONS = 8
MAX_MESSAGE_BYTES = 65_536  # the workers' limit, so that one poison message can exceed it
FAILING_PARTITIONS = (1, 4, 6)  # one marked command (enrich raises for it) in the burst of each
VALID_TIMESTAMP = "2021-01-01T00:00:00Z"
SLOTS = 5  # workers alive at once at most (3 + replacements); each has its own pair of proxies
DATABASE_TIMEOUT_SECONDS = 5  # the workers' PostgreSQL operation timeout: the black hole outlasts it
SESSION_TIMEOUT_SECONDS = 10  # the workers' Kafka session timeout: the freeze and the partition outlast it
DISK_SLOT = 0  # the slot whose worker keeps its table in RocksDB on a small tmpfs of its own (the disk-full fault)
DISK_BYTES = 256 * 1024 * 1024  # that tmpfs: room for the run's table, filled on purpose by the fault
DISK_BURST_ROUNDS = 30  # at most 30 x 300 commands per partition of that worker (2.7 MB) to meet the full disk

# Header values no producer of ours sends: every one must be ignored, never fatal.
GARBAGE_HEADERS: list[list[tuple[str, bytes | None]]] = [
    [("correlation_id", b"\xff\xfe\xfd not utf-8")],
    [("correlation_id", b"ING:" + b"7" * 5000)],
    [("correlationId", b"ING:not-a-uuid"), ("correlation_id", b"")],
    [("traceparent", b"\x00\xff garbage"), ("tracestate", b"\xff" * 64)],
    [("traceparent", b"00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-yyyyyyyyyyyyyyyy-01")],
    [("correlation_id", None), ("traceparent", None), ("x-null", None)],
    [("", b""), ("\u00e9\u00e8 \u2603", b"\x00\x00"), ("dlq.reason", b"forged")],
    [(f"h{i}", os.urandom(16)) for i in range(50)],
]


def poison_values(partition: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """(kind, key, value) of the hostile messages of one partition: none of them decodes to a command."""
    some_id = str(uuid.uuid4())
    return [
        ("tombstone", b"poison-tombstone", None),
        ("empty", None, b""),
        ("non-utf-8", b"\xff\xfe key", b"\xff\xfe\xfd not utf-8 \x80\x81"),
        ("utf-8 in json broken", None, b'{"command_id": "\xff\xfe", "event_timestamp": "2021-01-01T00:00:00Z"}'),
        ("not json", None, f"poison {partition}: not json {{".encode()),
        ("array", None, b"[1, 2, 3]"),
        ("number", None, b"42"),
        ("null", None, b"null"),
        ("string", None, b'"just a string"'),
        ("nested array", None, b"[" * 5000 + b"]" * 5000),
        ("nested object", None, b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("empty object", None, b"{}"),
        ("non-uuid id", None, json.dumps({"command_id": f"not-a-uuid-{partition}",
                                          "event_timestamp": VALID_TIMESTAMP}).encode()),
        ("nul in id", None, json.dumps({"command_id": "\u0000" + some_id,
                                        "event_timestamp": "\u0000"}).encode()),
        ("numeric timestamp", None, json.dumps({"command_id": some_id, "event_timestamp": 1609459200}).encode()),
        ("impossible timestamp", None, json.dumps({"command_id": some_id,
                                                   "event_timestamp": "2021-13-45T99:99:99Z"}).encode()),
        ("infinite timestamp", None, ('{"command_id": "%s", "event_timestamp": 1e999}' % some_id).encode()),
        ("oversized", None, json.dumps({"command_id": some_id, "event_timestamp": VALID_TIMESTAMP,
                                        "padding": "x" * MAX_MESSAGE_BYTES}).encode()),
    ]


def id_for_partition(partition: int) -> str:
    """A new command id whose key the default partitioner puts on `partition` (as a keyed producer would)."""
    partitioner = DefaultPartitioner()
    everything = list(range(PARTITIONS))
    while True:
        command_id = str(uuid.uuid4())
        if partitioner(command_id.encode(), everything, everything) == partition:
            return command_id


@dataclass(frozen=True)
class Poison:
    """A hostile message of the burst, where the broker put it."""

    kind: str
    value: bytes | None
    partition: int
    offset: int


@dataclass
class Fault:
    """One injected fault: how soon an operator would see it, how soon the pipeline was back."""

    kind: str
    detected: float | None  # seconds from injection to readiness DOWN or an alert metric; None: not seen
    signal: str  # what showed it (readiness check, metric), or why nothing did
    recovered: float  # seconds from healing until rows are stored again and every worker is ready
    refused: int  # POSTs not acknowledged while it lasted (each retried until acknowledged)

    def line(self) -> str:
        seen = f"detected {self.detected:5.1f} s" if self.detected is not None else "not detected  "
        return (f"  {self.kind:<26} {seen}  recovered {self.recovered:5.1f} s  refused {self.refused:5d}"
                f"  ({self.signal})")


@dataclass
class Report:
    events: int
    faults: list[Fault] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    table_mismatches: int = 0
    dead_letter_mismatches: int = 0
    status_mismatches: int = 0  # poison not `invalid`, marked commands not `failed`
    audit_gaps: int = 0  # app.audit: messages below the committed offsets without a processed_events row
    audited: str = ""
    uncommitted: int = 0  # messages the group had not committed a minute after the last fault: a stalled partition
    poison: int = 0
    failing: int = 0
    seconds: float = 0.0

    @property
    def undetected(self) -> list[str]:
        """Fault kinds no injection of which was seen by a probe or an alert's metric."""
        seen = {f.kind for f in self.faults if f.detected is not None}
        return sorted({f.kind for f in self.faults} - seen)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.table_mismatches or self.dead_letter_mismatches
                    or self.status_mismatches or self.audit_gaps or self.uncommitted)

    def as_json(self) -> dict:
        return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "events": self.events,
                "faults": [dataclasses.asdict(f) for f in self.faults], "kinds": len({f.kind for f in self.faults}),
                "undetected_kinds": self.undetected,
                "lost": self.lost, "duplicated": self.duplicated, "table_mismatches": self.table_mismatches,
                "dead_letter_mismatches": self.dead_letter_mismatches, "status_mismatches": self.status_mismatches,
                "audit_gaps": self.audit_gaps, "audited": self.audited, "uncommitted": self.uncommitted,
                "poison": self.poison,
                "failing": self.failing, "seconds": round(self.seconds, 1), "ok": self.ok}

    def lines(self) -> list[str]:
        lines = [f"events:            {self.events}", f"faults injected:   {len(self.faults)}"]
        lines += [f"  kinds: {len({f.kind for f in self.faults})}"] + [f.line() for f in self.faults]
        lines += [f"  kinds never detected: {', '.join(self.undetected) or 'none'}"]
        lines += [f"poison messages:   {self.poison} (+ {self.failing} commands failing in enrich)",
                  f"lost:              {self.lost}", f"duplicated:        {self.duplicated}",
                  f"table mismatches:  {self.table_mismatches}",
                  f"dead-letter diffs: {self.dead_letter_mismatches}",
                  f"status diffs:      {self.status_mismatches}",
                  f"audit gaps:        {self.audit_gaps}{f' ({self.audited})' if self.audited else ''}",
                  f"uncommitted:       {self.uncommitted}",
                  f"seconds:           {self.seconds:.1f}"]
        return lines


class Chaos:
    def __init__(self, events: int, workdir: Path, deadline: float) -> None:
        self.events = events
        self.workdir = workdir
        self.deadline = time.monotonic() + deadline
        self.acknowledged: dict[str, str] = {}  # id -> event_timestamp
        self.invalid_values: set[bytes] = set()
        self.poison: list[Poison] = []
        # Valid commands whose enrichment raises in every worker: dead-lettered and `failed`, never stored.
        self.failing: dict[str, tuple[int, int | None]] = {
            id_for_partition(p): (p, None) for p in FAILING_PARTITIONS}  # id -> (partition, offset)
        self.workers: list[Worker] = []
        self.sent = 0
        self.refused = 0  # POST attempts not acknowledged (answered non-200 or not at all)
        self.load_done = False
        self.faults_done = False
        self.disk: Path | None = None

    # -- infrastructure -------------------------------------------------------
    def start_kafka(self):
        """The run's broker, with one extra listener per worker slot, advertised at that slot's proxy."""
        libs = os.environ.get("STACK_KAFKA_LIBS") or str(REPO / ".stack/kafka/libs")
        return stack.start_kafka(self.workdir / "broker", libs_dir=Path(libs), extra_listeners={
            f"PROXY{slot}": (self.kafka_ports[slot], self.kafka_proxy_ports[slot]) for slot in range(SLOTS)})

    def start_infrastructure(self) -> None:
        ports = iter(free_ports(3 * SLOTS + 1))
        self.kafka_ports = [next(ports) for _ in range(SLOTS)]  # the broker's listener of each slot
        self.kafka_proxy_ports = [next(ports) for _ in range(SLOTS)]  # ... and the proxy in front of it
        self.pg_proxy_ports = [next(ports) for _ in range(SLOTS)]
        self.toxiproxy = ToxiproxyServer(self.workdir / "toxiproxy", next(ports), install()).start()
        self.broker = self.start_kafka()
        self.postgres = stack.start_postgres(self.workdir / "pg")
        self.disk = self.mount_disk()
        self.env = {
            **os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap, "DATABASE_URL": self.postgres.url,
            "APP_ID": GROUP, "COMMAND_TOPIC": TOPIC, "TABLE_STORE": "memory://",
            "BATCH_SIZE": "500", "BATCH_MAX_WAIT_SECONDS": "0.1", "PUBLISH_TIMEOUT_SECONDS": "3",
            "DATABASE_TIMEOUT_SECONDS": str(DATABASE_TIMEOUT_SECONDS),
            "KAFKA_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT_SECONDS),
            "CIRCUIT_BREAKER_RESET_SECONDS": "2", "DATABASE_RETRY_MAX_SECONDS": "1", "LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1", "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
            # Every worker (scaled, restarted) carries the same fault, so the marked commands
            # fail wherever they are consumed and however often they are read again.
            "FAULT_STAGE": "enrich", "FAULT_COMMAND_IDS": ",".join(self.failing), "FAULT_TIMES": "0",
        }

    async def start_proxies(self) -> None:
        """Per slot: kafka<slot> (proxy port -> the slot's broker listener) and pg<slot> (-> PostgreSQL)."""
        pg_port = int(self.postgres.url.rsplit(":", 1)[1].split("/")[0])
        async with Toxiproxy(self.toxiproxy.api) as toxi:
            for slot in range(SLOTS):
                await toxi.proxy(f"kafka{slot}", self.kafka_proxy_ports[slot], self.kafka_ports[slot])
                await toxi.proxy(f"pg{slot}", self.pg_proxy_ports[slot], pg_port)

    def slot_env(self, slot: int) -> dict[str, str]:
        """The env of a worker in `slot`: it reaches Kafka and PostgreSQL only through that slot's proxies."""
        head, tail = self.postgres.url.rsplit(":", 1)
        return {**self.env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_proxy_ports[slot]}",
                "DATABASE_URL": f"{head}:{self.pg_proxy_ports[slot]}/{tail.split('/', 1)[1]}"}

    def mount_disk(self) -> Path | None:
        """A tmpfs for the DISK_SLOT worker's data dir, or None where mounting needs a root we are not."""
        if os.geteuid() != 0:
            print("chaos: not root, so no tmpfs to fill: the table-store disk-full fault is left out",
                  file=sys.stderr, flush=True)
            return None
        disk = self.workdir / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)], check=True)
        return disk

    def stop_infrastructure(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.signal(signal.SIGCONT)  # a frozen worker must be able to stop
            worker.stop()
        if getattr(self, "toxiproxy", None) is not None:
            self.toxiproxy.stop()
        stack.stop_kafka(self.workdir / "broker", kill=True)
        stack.stop_postgres(self.workdir / "pg")
        if self.disk is not None:
            subprocess.run(["umount", "-l", str(self.disk)], check=False)

    def query(self, sql: str, params: tuple | None = None) -> list[tuple]:
        with psycopg2.connect(self.postgres.url) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        conn.close()
        return rows

    def stored(self) -> int:
        try:
            return self.query("SELECT count(*) FROM timestamp_records")[0][0]
        except psycopg2.Error:
            return -1

    async def add_worker(self, slot: int | None = None) -> Worker:
        """A worker in `slot`, or in a slot no live worker holds."""
        if slot is None:
            taken = {w.slot for w in self.live_workers()} | {w.slot for w in self.workers if w.process is None}
            slot = min(set(range(SLOTS)) - taken)
        env = self.slot_env(slot)
        if slot == DISK_SLOT and self.disk is not None:
            # Its own RocksDB table on the tmpfs (the others keep theirs in memory): a restart of
            # the slot reopens the same store, as a pod does on its volume.
            env.update(TABLE_STORE="rocksdb://", TABLE_ROCKSDB_WRITE_BUFFER_MIB="1")
        worker = FaultyWorker(env, self.workdir / f"worker-{len(self.workers)}.log")
        if slot == DISK_SLOT and self.disk is not None:
            worker.data_dir = self.disk
        worker.slot = slot
        self.workers.append(worker)
        worker.start()
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
                        self.refused += 1
                        await asyncio.sleep(0.2)

            await asyncio.gather(*(client() for _ in range(16)))

    async def get_load(self) -> None:
        """GETs of acknowledged ids while the load runs (their answers are not audited: the audit reads later)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while not (self.load_done and self.faults_done) and time.monotonic() < self.deadline:
                workers = self.live_workers()
                if not workers or not self.acknowledged:
                    await asyncio.sleep(0.2)
                    continue
                command_id = random.choice(list(self.acknowledged)[-1000:])
                try:
                    async with session.get(f"{random.choice(workers).url}/api/v1/timestamp/{command_id}") as r:
                        await r.read()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.02)

    async def produce_load(self, count: int) -> None:
        producer = AIOKafkaProducer(**client_options(self.broker.bootstrap), acks="all",
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

    async def poison_burst(self) -> list[tuple[str, int, int]]:
        """Produce the hostile messages to every partition, interleaved with valid commands.

        Returns the valid commands of the burst as (id, partition, offset); the
        hostile ones are kept in self.poison, the marked ones in self.failing.
        """
        messages = []  # (kind, partition, key, value, headers)
        for partition in range(PARTITIONS):
            for n, (kind, key, value) in enumerate(poison_values(partition)):
                headers = GARBAGE_HEADERS[(partition + n) % len(GARBAGE_HEADERS)]
                messages.append((kind, partition, key, value, headers))
                # A valid command after each: every other one with garbage headers of its own.
                command_id = id_for_partition(partition)
                headers = (GARBAGE_HEADERS[(partition + n + 3) % len(GARBAGE_HEADERS)] if n % 2 else
                           [("correlation_id", f"CHAOS:{uuid.uuid4()}".encode())])
                value = json.dumps({"command_id": command_id, "event_timestamp": VALID_TIMESTAMP}).encode()
                messages.append(("valid", partition, command_id.encode(), value, headers))
                if n == 7 and partition in FAILING_PARTITIONS:
                    marked = next(i for i, (p, _) in self.failing.items() if p == partition)
                    value = json.dumps({"command_id": marked, "event_timestamp": VALID_TIMESTAMP}).encode()
                    messages.append(("failing", partition, marked.encode(), value, []))
        producer = AIOKafkaProducer(**client_options(self.broker.bootstrap), acks="all", enable_idempotence=True,
                                    linger_ms=5, max_request_size=2 * MAX_MESSAGE_BYTES)
        await producer.start()
        try:
            # Sent once, never resent (no broker fault overlaps the burst): each
            # message is at the one position its metadata names.
            futures = [await producer.send(TOPIC, value, key=key, partition=partition, headers=headers)
                       for _, partition, key, value, headers in messages]
            valid = []
            for (kind, partition, key, value, _), future in zip(messages, futures):
                metadata = await future
                if kind == "valid":
                    valid.append((key.decode(), metadata.partition, metadata.offset))
                    self.acknowledged[key.decode()] = VALID_TIMESTAMP
                elif kind == "failing":
                    self.failing[key.decode()] = (metadata.partition, metadata.offset)
                else:
                    self.poison.append(Poison(kind, value, metadata.partition, metadata.offset))
        finally:
            await producer.stop()
        return valid

    def rows_at(self, positions: list[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
        """(partition, offset) -> (status, event_id, error) of the processed_events rows at those positions."""
        rows = self.query(
            'SELECT e.partition, e."offset", e.status, e.event_id::text, e.error FROM processed_events e '
            "JOIN unnest(%s::integer[], %s::bigint[]) AS w(p, o) "
            'ON e.topic = %s AND e.partition = w.p AND e."offset" = w.o',
            ([p for p, _ in positions], [o for _, o in positions], TOPIC))
        return {(p, o): (status, event_id, error) for p, o, status, event_id, error in rows}

    async def poison_recovered(self, valid: list[tuple[str, int, int]], sent: float) -> tuple[float, float]:
        """Seconds from `sent` until the first message of the burst was dead-lettered (its `invalid` or `failed`
        row, written with the dead letter), and seconds the burst held up its partition, the longest over the
        partitions.

        Per partition: from the consumer reaching the burst (the message just
        before it has its row) until every message of the burst has its row and
        its valid commands are stored. The backlog of the load in front of the
        burst (tens of seconds at 100,000 events) is not the poison's doing.
        """
        burst: dict[int, list[int]] = {}
        ids: dict[int, list[str]] = {}
        for partition, offset in ([(p.partition, p.offset) for p in self.poison] + list(self.failing.values())
                                  + [(p, o) for _, p, o in valid]):
            burst.setdefault(partition, []).append(offset)
        for command_id, partition, _ in valid:
            ids.setdefault(partition, []).append(command_id)
        before = {p: (p, min(offsets) - 1) for p, offsets in burst.items() if min(offsets) > 0}
        positions = [(p, o) for p, offsets in burst.items() for o in offsets] + list(before.values())
        everything = [command_id for batch in ids.values() for command_id in batch]
        hostile = {(p.partition, p.offset) for p in self.poison} | set(self.failing.values())
        first_dead_letter = None
        reached: dict[int, float] = {}
        done: dict[int, float] = {}
        while len(done) < len(burst):
            if time.monotonic() > self.deadline:
                pending = sorted(set(burst) - set(done))
                raise TimeoutError(f"the poison burst was not worked through in partitions {pending}")
            now = time.monotonic()
            try:
                rows = self.rows_at(positions)
                stored = {row[0] for row in self.query(
                    "SELECT id::text FROM timestamp_records WHERE id = ANY(%s::uuid[])", (everything,))}
            except psycopg2.Error:
                await asyncio.sleep(0.2)
                continue
            if first_dead_letter is None and any(position in rows for position in hostile):
                first_dead_letter = now - sent
            for partition, offsets in burst.items():
                if partition not in reached and (partition not in before or before[partition] in rows):
                    reached[partition] = now
                if partition not in done and all((partition, o) in rows for o in offsets) and stored.issuperset(
                        ids.get(partition, ())):
                    done[partition] = now
                    reached.setdefault(partition, now)
            await asyncio.sleep(0.2)
        return first_dead_letter, max(done[p] - reached[p] for p in burst)

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

    async def ready(self, session: aiohttp.ClientSession, worker: Worker) -> bool:
        return await self.down_checks(session, worker) == []

    @staticmethod
    async def down_checks(session: aiohttp.ClientSession, worker: Worker) -> list[str] | None:
        """The readiness checks a worker reports DOWN ([] when ready), None when it does not answer."""
        try:
            async with session.get(f"{worker.url}/health/ready") as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    return []
                return sorted(name for name, check in body.get("checks", {}).items() if check["status"] != "UP")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, AttributeError, KeyError, TypeError):
            return None

    async def alert_metrics(self, session: aiohttp.ClientSession, worker: Worker) -> dict[str, float]:
        """The metrics the alerts of deploy/prometheus/rules.yml read, from one worker's /metrics."""
        wanted = ("timestamp_circuit_breaker_state", "timestamp_db_write_failures_total",
                  "timestamp_command_publish_failures_total", "timestamp_db_write_duration_seconds_count",
                  "timestamp_end_to_end_latency_seconds_count", "timestamp_table_store_unwritable",
                  "timestamp_rebalances_total")
        # Histogram buckets at the thresholds of HighDatabaseWriteLatency (p95 > 0.5 s) and
        # EndToEndLatencyP95High (p95 > 1 s).
        buckets = {'timestamp_db_write_duration_seconds_bucket{le="0.5"}': "db_le",
                   'timestamp_end_to_end_latency_seconds_bucket{le="1.0"}': "e2e_le"}
        values: dict[str, float] = {}
        try:
            async with session.get(f"{worker.url}/metrics") as response:
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return values
        for line in text.splitlines():
            series, _, number = line.rpartition(" ")
            name = series.split("{", 1)[0]
            key = name if name in wanted else buckets.get(series)
            if key:
                values[key] = values.get(key, 0.0) + float(number)
        return values

    @staticmethod
    def p95_above(before: dict[str, float], now: dict[str, float], count: str, bucket: str) -> bool:
        """More than 5% of the observations since `before` above the bucket's bound (at least 5 of them)."""
        new = now.get(count, 0) - before.get(count, 0)
        below = now.get(bucket, 0) - before.get(bucket, 0)
        return new >= 5 and (new - below) / new > 0.05

    async def watch(self, targets: list[Worker], baseline: dict[int, dict[str, float]], started: float,
                    found: dict, latency: bool = True) -> None:
        """Until the fault shows: a target's readiness DOWN (or no answer), or an alert metric set.

        Without `latency`, the latency metrics do not count (a planned scale step under a load whose
        backlog keeps end-to-end latency over 1 s anyway is shown by its rebalance, not by that).
        """
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as session:
            while True:
                for worker in targets:
                    down = await self.down_checks(session, worker)
                    if down is None:
                        found.update(seconds=time.monotonic() - started, signal="readiness (no answer)")
                        return
                    if down:
                        found.update(seconds=time.monotonic() - started, signal=f"readiness DOWN: {', '.join(down)}")
                        return
                    metrics = await self.alert_metrics(session, worker)
                    before = baseline.get(id(worker), {})
                    if metrics.get("timestamp_circuit_breaker_state", 0) == 2:
                        found.update(seconds=time.monotonic() - started, signal="circuit breaker open (metric)")
                        return
                    if metrics.get("timestamp_table_store_unwritable", 0) == 1:
                        found.update(seconds=time.monotonic() - started, signal="table store unwritable (metric)")
                        return
                    for name in ("timestamp_db_write_failures_total", "timestamp_command_publish_failures_total",
                                 "timestamp_rebalances_total"):
                        if metrics.get(name, 0) > before.get(name, 0):
                            found.update(seconds=time.monotonic() - started, signal=f"{name} rising")
                            return
                    if latency and self.p95_above(before, metrics, "timestamp_db_write_duration_seconds_count",
                                                  "db_le"):
                        found.update(seconds=time.monotonic() - started, signal="db write p95 > 0.5 s (metric)")
                        return
                    if latency and self.p95_above(before, metrics, "timestamp_end_to_end_latency_seconds_count",
                                                  "e2e_le"):
                        found.update(seconds=time.monotonic() - started, signal="end-to-end p95 > 1 s (metric)")
                        return
                await asyncio.sleep(0.25)

    async def trickle(self) -> None:
        """One command per partition every half second while the faults run, so that every fault
        meets traffic even when the load is already through (the small run)."""
        producer = AIOKafkaProducer(**client_options(self.broker.bootstrap), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            while not self.faults_done and time.monotonic() < self.deadline:
                for partition in range(PARTITIONS):
                    command_id = id_for_partition(partition)
                    value = json.dumps({"command_id": command_id, "event_timestamp": VALID_TIMESTAMP}).encode()
                    while True:
                        try:
                            await producer.send_and_wait(TOPIC, value, key=command_id.encode())
                            break
                        except Exception:  # the broker restarts: send the same again
                            if time.monotonic() > self.deadline:
                                raise
                            await asyncio.sleep(0.5)
                    self.acknowledged[command_id] = VALID_TIMESTAMP
                await asyncio.sleep(0.5)
        finally:
            await producer.stop()

    async def post_trickle(self) -> None:
        """POSTs (ten a second, each retried with its Idempotency-Key until acknowledged) while the faults run."""
        n = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while not self.faults_done and time.monotonic() < self.deadline:
                await asyncio.sleep(0.1)
                workers = self.live_workers()
                if not workers:
                    continue
                timestamp = f"2019-{1 + n % 12:02d}-{1 + n % 28:02d}T00:00:00Z"
                try:
                    async with session.post(f"{random.choice(workers).url}/api/v1/timestamp/{timestamp}",
                                            headers={"Idempotency-Key": f"chaos-trickle-{n}"}) as response:
                        if response.status == 200:
                            self.acknowledged[(await response.json())["id"]] = timestamp
                            n += 1
                            continue
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                self.refused += 1

    async def canaries_stored(self) -> None:
        """One new command per partition, produced now: until every one is stored (every partition flows again).

        Unlike "rows are being stored", this also holds when the load is already
        through (the small run) and when only some partitions are stuck.
        """
        ids = [id_for_partition(p) for p in range(PARTITIONS)]
        producer = AIOKafkaProducer(**client_options(self.broker.bootstrap), acks="all", enable_idempotence=True)
        while True:
            try:
                await producer.start()
                break
            except Exception:
                if time.monotonic() > self.deadline:
                    raise
                await asyncio.sleep(0.5)
        try:
            for command_id in ids:
                value = json.dumps({"command_id": command_id, "event_timestamp": VALID_TIMESTAMP}).encode()
                while True:
                    try:
                        await producer.send_and_wait(TOPIC, value, key=command_id.encode())
                        break
                    except Exception:  # the broker is still coming back: send it again (same id, same value)
                        if time.monotonic() > self.deadline:
                            raise
                        await asyncio.sleep(0.5)
                self.acknowledged[command_id] = VALID_TIMESTAMP
        finally:
            await producer.stop()
        while time.monotonic() < self.deadline:
            try:
                if self.query("SELECT count(*) FROM timestamp_records WHERE id = ANY(%s::uuid[])", (ids,))[0][0] \
                        == len(ids):
                    return
            except psycopg2.Error:
                pass
            await asyncio.sleep(0.2)
        raise TimeoutError("canaries not stored after fault")

    async def all_ready(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as session:
            while time.monotonic() < self.deadline:
                workers = self.live_workers()
                if workers and all([await self.ready(session, w) for w in workers]):
                    return
                await asyncio.sleep(0.25)
        raise TimeoutError("workers not ready after fault")

    async def inject(self, report: Report, kind: str, targets: list[Worker], action, hold: float = 0.0,
                     heal=None, expected: str = "", detect_within: float = 0.0) -> None:
        """Run `action`, keep it `hold` seconds (and up to `detect_within` more until it is detected), `heal`;
        record detection, recovery (canaries stored, every worker ready) and refused POSTs."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as session:
            baseline = {id(w): await self.alert_metrics(session, w) for w in targets}
        refused = self.refused
        found: dict = {}
        started = time.monotonic()
        watcher = (asyncio.create_task(self.watch(targets, baseline, started, found, latency=expected != "planned"))
                   if targets else None)
        try:
            await action()
            await asyncio.sleep(hold)
            if watcher is not None and detect_within:
                await asyncio.wait([watcher], timeout=detect_within)
            if heal is not None:
                await heal()
            healed = time.monotonic() if heal is not None else started  # no heal: recovery counts from the fault
            await self.canaries_stored()
            await self.all_ready()
            recovered = time.monotonic() - healed
            if watcher is not None and not found and heal is None:
                # A signal may trail the recovery (a rebalance completes, a dead letter is counted).
                await asyncio.wait([watcher], timeout=10)
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        report.faults.append(Fault(kind, found.get("seconds"), found.get("signal", expected or "no signal"),
                                   recovered, self.refused - refused))
        print(report.faults[-1].line(), file=sys.stderr, flush=True)

    async def toxic(self, report: Report, kind: str, proxies: list[str], toxics: list[tuple[str, dict]],
                    hold: float, targets: list[Worker], expected: str = "", detect_within: float = 0.0) -> None:
        async with Toxiproxy(self.toxiproxy.api) as toxi:
            async def action():
                for proxy in proxies:
                    for toxic_type, attributes in toxics:
                        await toxi.add_toxic(proxy, toxic_type, **attributes)

            await self.inject(report, kind, targets, action, hold, toxi.reset, expected, detect_within)

    async def partition(self, report: Report, worker: Worker, hold: float) -> None:
        async with Toxiproxy(self.toxiproxy.api) as toxi:
            await self.inject(report, "Kafka partition (1 worker)", [worker],
                              lambda: toxi.enable(f"kafka{worker.slot}", False), hold,
                              lambda: toxi.enable(f"kafka{worker.slot}", True))

    async def proxy_faults(self, report: Report) -> None:
        """The partial failures behind Toxiproxy, a freeze and a rolling restart."""
        everyone = self.live_workers()
        pg_all = [f"pg{w.slot}" for w in everyone]
        await self.toxic(report, "PostgreSQL latency 300 ms", pg_all, [("latency", {"latency": 300})], 8, everyone,
                         "below every threshold", detect_within=30)
        await self.toxic(report, "PostgreSQL black hole", pg_all, [("timeout", {"timeout": 0})],
                         DATABASE_TIMEOUT_SECONDS + 4, everyone)
        one = self.live_workers()[-1]
        await self.toxic(report, "PostgreSQL reset_peer", [f"pg{one.slot}"],
                         [("reset_peer", {"timeout": 0}),
                          ("reset_peer", {"timeout": 0, "name": "reset-up", "stream": "upstream"})], 3,
                         [one])
        one = self.live_workers()[0]
        await self.toxic(report, "Kafka latency + bandwidth", [f"kafka{one.slot}"],
                         [("latency", {"latency": 300}), ("bandwidth", {"rate": 64})], 8, [one],
                         "below every threshold", detect_within=30)
        await self.partition(report, self.live_workers()[-1], SESSION_TIMEOUT_SECONDS + 5)
        frozen = self.live_workers()[-1]
        await self.inject(report, "SIGSTOP past session timeout", [frozen],
                          lambda: asyncio.to_thread(frozen.signal, signal.SIGSTOP), SESSION_TIMEOUT_SECONDS + 4,
                          lambda: asyncio.to_thread(frozen.signal, signal.SIGCONT))

        async def rolling():
            for worker in list(self.live_workers()):
                await asyncio.to_thread(worker.stop)
                await self.add_worker(worker.slot)

        await self.inject(report, "rolling restart", list(self.live_workers()), rolling)

    async def disk_full(self, report: Report) -> None:
        """The DISK_SLOT worker's tmpfs filled to the last page, then freed, under a burst to its partitions.

        RocksDB allocates a memtable's write-ahead log ahead, so a full disk is met
        when a memtable (1 MiB here) is flushed: the burst brings that moment.
        """
        worker = next(w for w in self.live_workers() if w.slot == DISK_SLOT)
        filler = self.disk / "filler"

        async def fill_and_write():
            await asyncio.to_thread(fill_up, filler)
            partitions = await self.owned_partitions(worker)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as session:
                for _ in range(DISK_BURST_ROUNDS):
                    await self.produce_valid([id_for_partition(p) for p in partitions for _ in range(300)])
                    if "table_store" in (await self.down_checks(session, worker) or []):
                        return

        await self.inject(report, "table store disk full", [worker], fill_and_write, 3,
                          lambda: asyncio.to_thread(filler.unlink), detect_within=60)

    async def owned_partitions(self, worker: Worker) -> list[int]:
        """The partitions of the topic a worker consumes now (the labels of its consumer-lag gauge)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as session:
            async with session.get(f"{worker.url}/metrics") as response:
                text = await response.text()
        owned: set[int] = set()
        for line in text.splitlines():
            if line.startswith("timestamp_consumer_lag_messages{") and f'topic="{TOPIC}"' in line:
                owned.add(int(line.split('partition="', 1)[1].split('"', 1)[0]))
        return sorted(owned) or list(range(PARTITIONS))

    async def produce_valid(self, ids: list[str]) -> None:
        """Valid commands with these ids, acknowledged by the broker, counted as acknowledged."""
        producer = AIOKafkaProducer(**client_options(self.broker.bootstrap), acks="all", enable_idempotence=True,
                                    linger_ms=5)
        await producer.start()
        try:
            futures = [await producer.send(TOPIC, json.dumps(
                {"command_id": command_id, "event_timestamp": VALID_TIMESTAMP}).encode(), key=command_id.encode())
                for command_id in ids]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        self.acknowledged.update(dict.fromkeys(ids, VALID_TIMESTAMP))

    async def faults(self, report: Report) -> None:
        rounds = 2 if self.events >= 50_000 else 1  # 20 faults in a full run, every kind once in a small one
        await self.until_sent(0.1)
        await self.inject(report, "scale 1 -> 3", self.live_workers(),
                          lambda: asyncio.gather(self.add_worker(), self.add_worker()), expected="planned")

        await self.until_sent(0.2)
        victim = self.live_workers()[-1]

        async def kill():
            victim.kill()
            await self.add_worker()

        await self.inject(report, "SIGKILL a worker", [victim], kill)

        await self.until_sent(0.3)
        refused, started = self.refused, time.monotonic()
        detected, recovered = await self.poison_recovered(await self.poison_burst(), started)
        report.faults.append(Fault("poison messages", detected, "dead letters of the burst (DeadLettersArriving)",
                                   recovered, self.refused - refused))
        print(report.faults[-1].line(), file=sys.stderr, flush=True)

        await self.until_sent(0.35)
        await self.proxy_faults(report)

        await self.until_sent(0.5)

        async def pg_stop():
            await asyncio.to_thread(stack.stop_postgres, self.workdir / "pg")
            await asyncio.sleep(2)
            await asyncio.to_thread(stack.start_postgres, self.workdir / "pg")

        await self.inject(report, "PostgreSQL restart", self.live_workers(), pg_stop)

        await self.until_sent(0.6)

        async def broker_restart():
            await asyncio.to_thread(stack.stop_kafka, self.workdir / "broker")
            await asyncio.sleep(2)
            await asyncio.to_thread(self.start_kafka)

        await self.inject(report, "broker restart", self.live_workers(), broker_restart)

        if rounds > 1:
            await self.until_sent(0.7)
            await self.proxy_faults(report)

        if self.disk is not None:
            await self.until_sent(0.8)
            await self.disk_full(report)

        await self.until_sent(0.85)

        async def scale_down():
            for worker in self.live_workers()[1:]:
                await asyncio.to_thread(worker.stop)

        await self.inject(report, "scale 3 -> 1", self.live_workers()[:1], scale_down, expected="planned")

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

        self.audit_poison(report, await read_dead_letters(self.broker.bootstrap, f"{TOPIC}.dlq"))
        await self.audit_offsets(report)

    def audit_poison(self, report: Report, letters: list) -> None:
        """Dead letters and processed_events rows of the invalid, hostile and failing messages."""
        report.poison, report.failing = len(self.poison), len(self.failing)
        poison = {(p.partition, p.offset): p for p in self.poison}
        failing = {position: command_id for command_id, position in self.failing.items()}
        by_position: dict[tuple[int, int], list] = {}
        others = []
        for letter in letters:
            info = describe(letter.headers)
            try:
                position = (int(info["dlq.original.partition"]), int(info["dlq.original.offset"]))
            except (KeyError, ValueError):
                position = None
            if info.get("dlq.original.topic") == TOPIC and (position in poison or position in failing):
                by_position.setdefault(position, []).append((letter, info))
            else:
                others.append(letter)

        # The load's invalid messages may have been produced twice (a chunk resent
        # after a broker restart): compare their distinct values.
        report.dead_letter_mismatches = len({r.value for r in others} ^ self.invalid_values)
        # The burst's were produced once: one dead letter per original position (a
        # replayed batch may send it again, identical), with the original value and
        # the reason it was refused.
        for position in poison.keys() | failing.keys():
            found = by_position.get(position, [])
            expected = poison[position].value if position in poison else None
            wrong = (not found or len({letter.value for letter, _ in found}) != 1
                     or any(info.get("dlq.value.omitted") for _, info in found))
            if position in poison:
                wrong = wrong or any(letter.value != expected or info.get("dlq.reason") in (None, PROCESSING_ERROR)
                                     for letter, info in found)
            else:
                wrong = wrong or any(info.get("dlq.reason") != PROCESSING_ERROR
                                     or info.get("dlq.error.type") != "RuntimeError"
                                     or letter.key != failing[position].encode()
                                     or failing[position].encode() not in (letter.value or b"")
                                     for letter, info in found)
            if wrong:
                report.dead_letter_mismatches += 1
                print(f"dead letters of {position} ({poison[position].kind if position in poison else 'failing'}): "
                      f"{[(describe(letter.headers), (letter.value or b'')[:60]) for letter, _ in found]}",
                      file=sys.stderr)

        rows = self.rows_at(list(poison) + list(failing))
        for position in poison:
            if rows.get(position, (None,))[0] != "invalid":
                report.status_mismatches += 1
                print(f"processed_events at {position} ({poison[position].kind}): {rows.get(position)}",
                      file=sys.stderr)
        for position, command_id in failing.items():
            status, event_id, error = rows.get(position, (None, None, None))
            if (status, event_id) != ("failed", command_id) or not (error or "").startswith("RuntimeError: injected"):
                report.status_mismatches += 1
                print(f"processed_events at {position} (failing {command_id}): {rows.get(position)}", file=sys.stderr)
        # Accounted for as failed, never stored (stored, `duplicated` would count them too).
        report.status_mismatches += self.query(
            "SELECT count(*) FROM timestamp_records WHERE id = ANY(%s::uuid[])", (list(self.failing),))[0][0]

    async def audit_offsets(self, report: Report) -> None:
        """app.ops.audit over the whole topic, once the group committed everything (or a minute passed)."""
        partitions = list(range(PARTITIONS))
        tps = [TopicPartition(TOPIC, p) for p in partitions]
        consumer = AIOKafkaConsumer(**client_options(self.broker.bootstrap), group_id=None, enable_auto_commit=False)
        database = Database(self.postgres.url)
        await consumer.start()
        try:
            async with KafkaView(self.broker.bootstrap, TOPIC, isolation_level("at_least_once")) as kafka:
                ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
                settle = min(self.deadline, time.monotonic() + 60)
                while True:
                    committed = await kafka.committed(GROUP, partitions)
                    if all((committed[p] or 0) >= ends[p] for p in partitions) or time.monotonic() > settle:
                        break
                    await asyncio.sleep(1)
                result = await offset_audit(kafka, database, GROUP, partitions)
        finally:
            await consumer.stop()
            await database.close()
        report.audit_gaps = result.missing
        behind = {p: ends[p] - (committed[p] or 0) for p in partitions if (committed[p] or 0) < ends[p]}
        report.uncommitted = sum(behind.values())
        if behind:
            print(f"not committed a minute after the faults (partition: messages): {behind}", file=sys.stderr)
            await self.print_worker_offsets()
        audited = sum(p.window[1] - p.window[0] for p in result.partitions)
        report.audited = f"{audited} of {sum(ends.values())} offsets committed and audited"
        if not result.committed_any:
            report.audit_gaps = -1  # nothing committed: nothing audited, which proves nothing
        if result.missing or not result.committed_any:
            print("\n".join(result.lines()), file=sys.stderr)

    async def print_worker_offsets(self) -> None:
        """What each live worker says of its partitions (lag and stalls, from its own view of the commits)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.5)) as session:
            for worker in self.live_workers():
                try:
                    async with session.get(f"{worker.url}/metrics") as response:
                        text = await response.text()
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    print(f"{worker.url}: {exc!r}", file=sys.stderr)
                    continue
                lines = [line for line in text.splitlines() if line.startswith(
                    ("timestamp_consumer_lag_messages{", "timestamp_partition_stall"))]
                print(f"{worker.url} ({worker.log_path.name}):\n  " + "\n  ".join(lines), file=sys.stderr)

    async def run(self) -> Report:
        report = Report(self.events)
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.start_infrastructure)
            await self.start_proxies()
            await ensure_topic(self.broker.bootstrap, TOPIC, PARTITIONS, 1, {"retention.ms": "-1"})
            await self.add_worker()

            async def load():
                try:
                    await asyncio.gather(self.post_load(self.events // 2),
                                         self.produce_load(self.events - self.events // 2))
                finally:
                    self.load_done = True

            async def faults():
                try:
                    await self.faults(report)
                finally:
                    self.faults_done = True

            await asyncio.gather(load(), self.get_load(), self.trickle(), self.post_trickle(), faults())
            await self.audit(report)
        finally:
            report.seconds = time.monotonic() - started
            await asyncio.to_thread(self.stop_infrastructure)
        return report


def fill_up(path: Path) -> None:
    """A file taking every free byte of its file system."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def run(events: int, deadline: float, workdir: Path | None = None) -> Report:
    """One chaos run in a new directory, removed afterwards unless the run failed (its logs are evidence)."""
    tmp = Path(tempfile.mkdtemp(prefix="chaos-", dir=workdir))
    report = None
    try:
        report = asyncio.run(Chaos(events, tmp, deadline).run())
        return report
    finally:
        if report is not None and report.ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"chaos run failed: worker logs and data kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--deadline", type=float, default=1800, help="seconds before the run gives up")
    parser.add_argument("--json", type=Path, default=REPO / "chaos" / "results" / "latest.json",
                        help="where the report goes as JSON (default chaos/results/latest.json)")
    args = parser.parse_args()
    result = run(args.events, args.deadline)
    print("\n".join(result.lines()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    print(f"report: {args.json}")
    sys.exit(0 if result.ok and not result.undetected else 1)
