"""Open-loop HTTP load against one worker that is also processing.

Open loop: request i is due at start + i / rate whatever happened to the
previous ones, and its latency is measured from that due time, not from when
the client got round to sending it (so a stalled server, or client, shows as
latency instead of silently lowering the rate). Every step has a rate and a
duration, so a fixed number of requests, and each request a timeout.

POST steps publish commands that the worker then persists; after each step
the bench waits until every accepted command is a row (and counts any that is
not). GET steps read ids accepted by the POST steps while a background
producer sends new commands straight to Kafka at a constant rate, so the
worker keeps processing while it answers.

Both are then run again against the floor, bench/bare_faust.py: the same
Faust, its web layer publishing a fixed command (acks=all, with a producer set
like the worker's) or answering a fixed record, and its agent taking what was
posted and the same background events, with nothing of ours. The cores each
used give the worker's cost as a ratio to the framework's
(`post_cores_vs_floor`, `get_cores_vs_floor`), and the floor's latencies say
what any Faust worker doing the job gets on the same machine in the same run.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import psycopg2
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.kafka_client import client_options
from app.adapters.topics import ensure_topic
from bench import vegeta
from bench.ceilings import drop_database, fresh_database
from bench.latency import step_result
from bench.live_worker import UNUSED_DATABASE, BareFaustWorker, CpuShare, worker_env
from tests.worker_process import Worker

P99_LIMIT_MS = 50.0
SHED_METRIC = "timestamp_http_requests_shed_total"
POST_TIMESTAMP = "2024-02-29T12:00:00Z"
CONNECTIONS = 1024


async def open_loop(send: Callable[[int], Awaitable[int]], rate: float, duration: float, timeout: float,
                    ok_status: int) -> dict:
    """Call `send(i)` (returns the HTTP status) at `rate` per second for `duration` seconds."""
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * duration))
    by_status: dict[str, list[float]] = {}
    outcomes: Counter[str] = Counter()
    send_lags: list[float] = []
    start = loop.time() + 0.05

    async def one(i: int, due: float) -> None:
        send_lags.append(loop.time() - due)
        try:
            async with asyncio.timeout(timeout):
                status = await send(i)
        except TimeoutError:
            outcomes["timeout"] += 1
            return
        except aiohttp.ClientError as exc:
            outcomes[type(exc).__name__] += 1
            return
        by_status.setdefault(str(status), []).append(loop.time() - due)
        outcomes[str(status)] += 1

    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    sent_in = loop.time() - start
    await asyncio.gather(*tasks)
    return step_result(rate=rate, duration=duration, requests=total,
                       sent_per_second=round(total / sent_in, 1) if sent_in > 0 else None,
                       outcomes=outcomes, by_status=by_status, send_lags=send_lags, ok_status=ok_status)


def passes(step: dict) -> bool:
    return step["error_count"] == 0 and step["p99_ms"] is not None and step["p99_ms"] < P99_LIMIT_MS


def highest_passing_rate(steps: list[dict]) -> float | None:
    """The highest rate such that it and every lower rate measured had p99 < 50 ms and no error."""
    best = None
    for step in sorted(steps, key=lambda s: s["rate"]):
        if not passes(step):
            break
        best = step["rate"]
    return best


def metric_value(exposition: str, sample: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(exposition) for s in f.samples if s.name == sample)


async def produce_at_rate(bootstrap: str, topic: str, rate: float, stop: asyncio.Event,
                          ids: list[str] | None = None) -> int:
    """Seed-format commands straight to Kafka at `rate` per second until `stop` is set (their ids into `ids`)."""
    if rate <= 0:
        await stop.wait()
        return 0
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    tick = 0.02
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while not stop.is_set():
            due = round((loop.time() - start) * rate)
            for _ in range(due - sent):
                command_id = str(uuid.uuid4())
                value = json.dumps({"command_id": command_id, "event_timestamp": POST_TIMESTAMP}).encode()
                await producer.send(topic, value, key=command_id.encode())
                if ids is not None:
                    ids.append(command_id)
            sent = max(sent, due)
            try:
                await asyncio.wait_for(stop.wait(), tick)
            except TimeoutError:
                pass
        await producer.flush()
    finally:
        await producer.stop()
    return sent


class HttpBench:
    """One worker on its own topic and database, and the steps run against it."""

    def __init__(self, bootstrap: str, server_url: str, name: str, workdir: Path, timeout: float,
                 vegeta: str | None = None) -> None:
        self.bootstrap, self.server_url, self.name, self.workdir = bootstrap, server_url, name, workdir
        self.vegeta = vegeta  # the Vegeta binary that sends the requests; None: this process's aiohttp client
        self.topic = name.replace("-", ".")
        self.database = name.replace("-", "_")
        self.timeout = timeout
        self.accepted: list[str] = []
        self.worker: Worker | None = None

    async def __aenter__(self) -> "HttpBench":
        await ensure_topic(self.bootstrap, self.topic, 8, 1, {})
        self.url = fresh_database(self.server_url, self.database)
        self.worker = Worker(worker_env(self.bootstrap, self.topic, self.name, self.url),
                             self.workdir / f"{self.name}.log").start()
        await self.worker.wait_ready(120)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self.session.close()
        finally:
            if self.worker:
                self.worker.stop()
            drop_database(self.server_url, self.database)

    async def _shed_total(self) -> float:
        async with self.session.get(f"{self.worker.url}/metrics") as response:
            return metric_value(await response.text(), SHED_METRIC)

    async def post_step(self, rate: float, duration: float, server: Worker | None = None) -> dict:
        """POSTs against `server` (the project's worker by default); the worker's accepted ids are
        waited for in the database and kept for the GET steps."""
        server = server or self.worker
        ours = server is self.worker  # the floor (bench/bare_faust.py) persists and sheds nothing
        url = f"{server.url}/api/v1/timestamp/{POST_TIMESTAMP}"
        accepted: list[str] = []

        async def send(i: int) -> int:
            async with self.session.post(url) as response:
                if response.status == 200:
                    accepted.append((await response.json())["id"])
                else:
                    await response.read()
                return response.status

        shed_before = await self._shed_total() if ours else 0
        cpu = CpuShare(server.process.pid)
        if self.vegeta:
            results = await vegeta.attack(self.vegeta, [f"POST {url}"], rate, duration, self.timeout, CONNECTIONS)
            step = vegeta.step_statistics(results, rate, duration, ok_status=200)
            accepted = [json.loads(vegeta.body_of(r))["id"] for r in results if r["code"] == 200]
        else:
            step = await open_loop(send, rate, duration, self.timeout, ok_status=200)
        step["cpu_cores"] = cpu.cores()
        if ours:
            step["shed_by_server"] = int(await self._shed_total() - shed_before)
            self.accepted.extend(accepted)
            step["accepted_not_persisted"] = await self._wait_persisted(accepted)
        return step

    async def _wait_persisted(self, ids: list[str], timeout: float = 180) -> int:
        """Until every accepted id is a row: how many are not, when `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        missing = len(ids)
        while time.monotonic() < deadline:
            with psycopg2.connect(self.url) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM timestamp_records WHERE id = ANY(%s::uuid[])", (ids,))
                missing = len(ids) - cur.fetchone()[0]
            conn.close()
            if missing == 0:
                break
            await asyncio.sleep(0.5)
        return missing

    async def get_step(self, rate: float, duration: float, background_rate: float,
                       server: Worker | None = None, topic: str | None = None) -> dict:
        """GETs of the accepted ids against `server` (the project's worker by default), while
        `background_rate` commands a second are produced to the topic it consumes (`topic`, by default the bench's)."""
        if not self.accepted:
            raise RuntimeError("no accepted POST to GET: run POST steps first")
        server = server or self.worker
        base = f"{server.url}/api/v1/timestamp/"
        ids = self.accepted

        async def send(i: int) -> int:
            async with self.session.get(base + ids[i % len(ids)]) as response:
                await response.read()
                return response.status

        ours = server is self.worker  # the floor (bench/bare_faust.py) sheds nothing and has no such metric
        shed_before = await self._shed_total() if ours else 0
        stop = asyncio.Event()
        background = asyncio.create_task(produce_at_rate(self.bootstrap, topic or self.topic, background_rate, stop))
        try:
            cpu = CpuShare(server.process.pid)
            if self.vegeta:
                targets = [f"GET {base}{i}" for i in ids]
                step = vegeta.step_statistics(
                    await vegeta.attack(self.vegeta, targets, rate, duration, self.timeout, CONNECTIONS),
                    rate, duration, ok_status=200)
            else:
                step = await open_loop(send, rate, duration, self.timeout, ok_status=200)
            step["cpu_cores"] = cpu.cores()
        finally:
            stop.set()
            produced = await background
        if ours:
            step["shed_by_server"] = int(await self._shed_total() - shed_before)
        step["background_events"] = produced
        return step

    async def floor_steps(self, post_rates: list[float], get_rates: list[float], duration: float,
                          background_rate: float, pause: float) -> tuple[list[dict], list[dict]]:
        """The POST and GET steps again, against bench/bare_faust.py in place of the worker: Faust's
        web layer, a publish set like the worker's, and its agent taking what is posted and the GET
        steps' background events, with nothing of ours."""
        self.worker.stop()  # idle, it would still process the background events on the same cores
        # A topic of its own: on the bench's, the floor would first read everything the steps before produced.
        topic = f"{self.topic}.floor"
        await ensure_topic(self.bootstrap, topic, 8, 1, {})
        floor = BareFaustWorker(worker_env(self.bootstrap, topic, f"{self.name}-floor", UNUSED_DATABASE),
                                self.workdir / f"{self.name}-floor.log")
        try:
            await floor.start().wait_ready(120)
            post, get = [], []
            for rate in post_rates:
                post.append(await self.post_step(rate, duration, server=floor))
                await asyncio.sleep(pause)
            for rate in get_rates:
                get.append(await self.get_step(rate, duration, background_rate, server=floor, topic=topic))
                await asyncio.sleep(pause)
        finally:
            floor.stop()
        return post, get


def cost_vs_floor(steps: list[dict], floor_steps: list[dict]) -> list[dict]:
    """Per rate, the cores the worker used for a step, over the cores the floor used for the same step."""
    floor_cores = {step["rate"]: step["cpu_cores"]["worker"] for step in floor_steps}
    rows = []
    for step in steps:
        if step["rate"] in floor_cores:
            worker, floor = step["cpu_cores"]["worker"], floor_cores[step["rate"]]
            rows.append({"rate": step["rate"], "worker_cores": worker, "floor_cores": floor,
                         "ratio": round(worker / floor, 2) if floor > 0 else None})
    return rows


async def measure_http(bootstrap: str, server_url: str, name: str, workdir: Path, post_rates: list[float],
                       get_rates: list[float], duration: float, background_rate: float,
                       timeout: float = 5.0, pause: float = 1.0, client: str = "python") -> dict:
    """POST steps, then GET steps, against one fresh worker, then both against the floor;
    the topic is left to the caller to delete.

    `client`: "python" (this process's aiohttp client) or "vegeta" (bench.vegeta, a Go load generator).
    """
    binary = vegeta.vegeta_binary() if client == "vegeta" else None
    async with HttpBench(bootstrap, server_url, name, workdir, timeout, vegeta=binary) as bench:
        post = []
        for rate in post_rates:
            post.append(await bench.post_step(rate, duration))
            await asyncio.sleep(pause)
        get = []
        for rate in get_rates:
            get.append(await bench.get_step(rate, duration, background_rate))
            await asyncio.sleep(pause)
        floor_post, floor_get = (await bench.floor_steps(post_rates, get_rates, duration, background_rate, pause)
                                 if post_rates or get_rates else ([], []))
    return {
        "client": client,
        "request_timeout_seconds": timeout,
        "get_background_events_per_second": background_rate,
        "post": post,
        "get": get,
        "floor_post": floor_post,
        "floor_get": floor_get,
        "post_cores_vs_floor": cost_vs_floor(post, floor_post),
        "get_cores_vs_floor": cost_vs_floor(get, floor_get),
        "max_rate_p99_under_50ms": {"post": highest_passing_rate(post), "get": highest_passing_rate(get)},
    }
