"""Soak: workers under steady mixed load for a long time, sampled every interval.

    make soak                        # 30 minutes, 2 workers
    make soak SOAK_MINUTES=5
    python -m bench.soak --minutes 30 --workers 2 --post-rate 400 --get-rate 400 --produce-rate 1000

On its own topic and database, against the local stack (KAFKA_BOOTSTRAP_SERVERS,
DATABASE_URL): open-loop POSTs and GETs spread over the workers (a GET on a
worker that does not own the id is routed to the owner), and commands produced
straight to Kafka. Every interval it records, per worker, the RSS and open file
descriptors (/proc) and, from /metrics, the asyncio task count, the event-loop
lag, the consumer lag and the memory RocksDB holds for the table (by part); and
the interval's POST and GET latency. The requests are sent by Vegeta
(bench.vegeta, a Go load generator) unless --http-client python: the Python
client costs about as much CPU per request as a worker answering it, and on
two shared cores that load generator was part of what it measured.

Every POST carries an Idempotency-Key of its own, so the soak knows the id of
each command it sent, answered or not. At the end: every accepted POST and
every produced command must be a row, once (`lost`); no row may be of a command
never sent (`unexpected`); of the POSTs with no answer, or answered 503
broker_unavailable (in doubt: the broker may have them), some may be rows, but
never more rows than such POSTs, so a POST shed with 503 overloaded was not
stored; and no worker may report an audit gap. The verdicts
compare with issue 21's targets: RSS growth after the first 5 minutes (per 30
minutes), p99 of the last 5 minutes against minutes 5-10. Beside them: the growth
of RSS less what the table's RocksDB stores hold (they fill up to their size),
and the stores' peak against their budget (docs/deployment.md). The result
also records how fast the machine ran Python at the start (bench.machine), so
runs on different machines are told apart. Writes
bench/results/soak-<UTC time>.json and, with --plot, a PNG next to it. Stops
every process it started, drops its database and topics and removes its
workers' state, whatever happens (their logs stay in --workdir until the next run).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import psycopg2
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.topics import ensure_topic
from app.domain import idempotency
from app.settings import SETTINGS
from bench.ceilings import delete_topics_containing, drop_database, fresh_database
from bench import machine, vegeta
from bench.http_load import CONNECTIONS, POST_TIMESTAMP, open_loop, produce_at_rate
from bench.live_worker import CpuShare, worker_env
from bench import report
from bench.report import RESULTS_DIR
from tests.worker_process import Worker

PARTITIONS = 8
SEED_POSTS = 200
REQUEST_TIMEOUT_SECONDS = 5.0
RSS_GROWTH_LIMIT_MB_PER_30_MIN = 10.0
P99_DRIFT_LIMIT = 1.5
WARM_UP_MINUTES = 5
STEP_FIGURES = ("requests", "ok", "p50_ms", "p99_ms", "max_ms", "errors", "error_count", "client_send_lag_max_ms")


MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def worker_metrics(exposition: str) -> dict:
    """What a sample reads of a worker's /metrics."""
    values = {"asyncio_tasks": 0.0, "event_loop_lag_seconds": 0.0, "consumer_lag_messages": 0.0,
              "audit_gap_messages": 0.0}
    store_memory: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            name = sample.name.removeprefix("timestamp_")
            if name in values:
                values[name] += sample.value
            elif name == "table_store_memory_bytes":
                store_memory[sample.labels["part"]] = round(sample.value / MB, 2)
    return {**{k: round(v, 4) for k, v in values.items()}, "table_store_memory_mb": store_memory}


def growth_per_30_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (minute, MB) after the warm-up, in MB per 30 minutes."""
    points = [(m, v) for m, v in samples if m >= WARM_UP_MINUTES]
    if len(points) < 2:
        return None
    mean_m = sum(m for m, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((m - mean_m) ** 2 for m, _ in points)
    return round(30 * sum((m - mean_m) * (v - mean_v) for m, v in points) / spread, 2) if spread else None


def post_outcome(status: int, body: bytes) -> str:
    """What a POST's answer says of its command: `accepted` (200: stored, or it is lost), `shed` (503
    overloaded: never published, so never stored), or `in_doubt` (no answer (status 0), a broker that did
    not acknowledge in time, any other error: it may or may not be stored)."""
    if status == 200:
        return "accepted"
    if status == 503:
        try:
            if json.loads(body).get("error") == "overloaded":
                return "shed"
        except (ValueError, AttributeError):
            pass
    return "in_doubt"


def table_store_budget_mb() -> float:
    """The most a worker's table stores may hold (docs/deployment.md, "Memory budget"): TABLE_ROCKSDB_MEMORY_MIB,
    every partition together, from the workers' environment or the service's default."""
    name = "TABLE_ROCKSDB_MEMORY_MIB"
    return float(os.environ.get(name, SETTINGS[name].default))  # MiB, the unit of MB here


def verdicts(intervals: list[dict], audit: dict) -> dict:
    """Issue 21's soak targets, each None when the run was too short to judge."""
    minutes = [i["end_seconds"] / 60 for i in intervals]
    rss, rss_less_store, store_peak = {}, {}, {}
    for name in intervals[0]["workers"] if intervals else []:
        samples = [(m, i["workers"][name]) for m, i in zip(minutes, intervals)]
        rss[name] = growth_per_30_min([(m, w["rss_mb"]) for m, w in samples])
        # RocksDB's memtables and block cache fill up to their configured size: the rest is what must stay flat.
        store = [(m, sum(w.get("table_store_memory_mb", {}).values())) for m, w in samples]
        rss_less_store[name] = growth_per_30_min([(m, w["rss_mb"] - held) for (m, w), (_, held) in zip(samples, store)])
        store_peak[name] = round(max((held for _, held in store), default=0.0), 2)

    def p99(method: str, first: float, last: float) -> float | None:
        """The median of the window's per-interval p99s: one stalled minute does not decide it."""
        values = [i[method]["p99_ms"] for m, i in zip(minutes, intervals)
                  if first < m <= last and i[method]["p99_ms"] is not None]
        return round(statistics.median(values), 2) if values else None

    total = minutes[-1] if minutes else 0
    drift = {}
    for method in ("post", "get"):
        early, late = p99(method, WARM_UP_MINUTES, 10), p99(method, max(total - 5, 10), total)
        drift[method] = {"median_p99_ms_minutes_5_10": early, "median_p99_ms_last_5_minutes": late,
                         "ratio": round(late / early, 2) if early and late and total >= 15 else None}
    growths = [g for g in rss.values() if g is not None]
    budget = table_store_budget_mb()
    return {
        "rss_growth_mb_per_30_min": rss,
        "rss_within_limit": (max(growths) <= RSS_GROWTH_LIMIT_MB_PER_30_MIN) if growths else None,
        "rss_less_table_store_growth_mb_per_30_min": rss_less_store,
        "table_store_peak_mb": store_peak,
        "table_store_budget_mb": budget,
        "table_store_within_budget": all(peak <= budget for peak in store_peak.values()),
        "p99_drift": drift,
        "p99_within_limit": all(d["ratio"] <= P99_DRIFT_LIMIT for d in drift.values())
        if all(d["ratio"] is not None for d in drift.values()) else None,
        "nothing_lost": audit["lost"] == 0 and audit["unexpected"] == 0 and audit["audit_gap_messages"] == 0
        and audit["in_doubt_stored"] <= audit["posts_in_doubt"],
    }


def get_targets(worker_urls: list[str], ids: list[str], count: int) -> list[str]:
    """Vegeta targets for `count` GETs, the ones the Python client sends: request i goes to worker
    i mod workers and reads ids[i mod ids], so half of them are routed to the worker that owns the id."""
    return [f"GET {worker_urls[i % len(worker_urls)]}/api/v1/timestamp/{ids[i % len(ids)]}" for i in range(count)]


class Soak:
    """Workers on their own topic and database, and the load against them."""

    def __init__(self, bootstrap: str, server_url: str, workdir: Path, workers: int, name: str,
                 vegeta_binary: str | None = None) -> None:
        self.bootstrap, self.server_url, self.workdir = bootstrap, server_url, workdir
        self.vegeta = vegeta_binary  # sends the interval's requests; None: this process's aiohttp client
        self.name, self.topic, self.database = name, name.replace("-", "."), name.replace("-", "_")
        self.state_dir = workdir / name  # the workers' table stores, removed at the end (~300 MB each)
        self.worker_count = workers
        self.workers: list[Worker] = []
        self.accepted: list[str] = []
        self.produced: list[str] = []
        self.sent: set[str] = set()  # the ids of every POST's Idempotency-Key
        self.posts_sent = 0
        self.posts_in_doubt = 0  # no answer, or the broker's acknowledgement timed out: stored or not

    async def __aenter__(self) -> "Soak":
        await ensure_topic(self.bootstrap, self.topic, PARTITIONS, 1, {})
        self.url = fresh_database(self.server_url, self.database)
        env = worker_env(self.bootstrap, self.topic, self.name, self.url)
        for number in range(self.worker_count):
            log = self.workdir / f"worker-{number}.log"
            log.unlink(missing_ok=True)  # the last run's logs are kept, not every run's
            self.workers.append(Worker(env, log, data_dir=self.state_dir / f"worker-{number}").start())
        for worker in self.workers:
            await worker.wait_ready(180)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024),
                                             timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self.session.close()
        finally:
            for worker in self.workers:
                worker.stop()
            shutil.rmtree(self.state_dir, ignore_errors=True)
            drop_database(self.server_url, self.database)
            await delete_topics_containing(self.bootstrap, self.name.removeprefix("soak-"))

    def next_key(self) -> str:
        """An Idempotency-Key not sent before; its command id is then one the rows may hold."""
        key = f"{self.name}-{self.posts_sent}"
        self.posts_sent += 1
        self.sent.add(str(idempotency.command_id_for(key)))
        return key

    async def post(self, i: int) -> int:
        worker = self.workers[i % len(self.workers)]
        headers = {idempotency.HEADER: self.next_key()}
        try:
            async with self.session.post(f"{worker.url}/api/v1/timestamp/{POST_TIMESTAMP}",
                                         headers=headers) as response:
                body = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.posts_in_doubt += 1
            raise
        self.record_post(response.status, body)
        return response.status

    def record_post(self, status: int, body: bytes) -> None:
        outcome = post_outcome(status, body)
        if outcome == "accepted":
            self.accepted.append(json.loads(body)["id"])
        elif outcome == "in_doubt":
            self.posts_in_doubt += 1

    def getter(self, ids: list[str]):
        async def get(i: int) -> int:
            worker = self.workers[i % len(self.workers)]
            async with self.session.get(f"{worker.url}/api/v1/timestamp/{ids[i % len(ids)]}") as response:
                await response.read()
                return response.status
        return get

    async def load(self, post_rate: float, get_rate: float, seconds: float) -> tuple[dict, dict]:
        """One interval of open-loop POSTs and GETs at once, spread over the workers: their step figures."""
        readable = list(self.accepted)  # accepted before this interval, so persisted by now or soon
        if not self.vegeta:
            return await asyncio.gather(
                open_loop(self.post, post_rate, seconds, REQUEST_TIMEOUT_SECONDS, ok_status=200),
                open_loop(self.getter(readable), get_rate, seconds, REQUEST_TIMEOUT_SECONDS, ok_status=200))
        urls = [worker.url for worker in self.workers]
        gets = get_targets(urls, readable, max(1, int(get_rate * seconds)))
        # One target per request (a few spare: Vegeta's count may round up), each with its own key and
        # so a blank line after it; a target used twice would only repeat an idempotent POST.
        posts = [f"POST {urls[n % len(urls)]}/api/v1/timestamp/{POST_TIMESTAMP}\n"
                 f"{idempotency.HEADER}: {self.next_key()}\n" for n in range(int(post_rate * seconds) + 100)]
        post_results, get_results = await asyncio.gather(
            vegeta.attack(self.vegeta, posts, post_rate, seconds, REQUEST_TIMEOUT_SECONDS, CONNECTIONS),
            vegeta.attack(self.vegeta, gets, get_rate, seconds, REQUEST_TIMEOUT_SECONDS, CONNECTIONS))
        for result in post_results:
            self.record_post(result["code"], vegeta.body_of(result))
        return (vegeta.step_statistics(post_results, post_rate, seconds, ok_status=200),
                vegeta.step_statistics(get_results, get_rate, seconds, ok_status=200))

    async def sample(self) -> dict:
        sample = {}
        for number, worker in enumerate(self.workers):
            async with self.session.get(f"{worker.url}/metrics") as response:
                metrics = worker_metrics(await response.text())
            pid = worker.process.pid
            sample[f"worker-{number}"] = {"rss_mb": round(rss_mb(pid), 1), "open_fds": open_fds(pid),
                                          **metrics}
        return sample

    async def wait_persisted(self, timeout: float) -> dict:
        expected = set(self.accepted) | set(self.produced)
        in_doubt = self.sent - set(self.accepted)
        deadline = time.monotonic() + timeout
        while True:
            with psycopg2.connect(self.url) as conn, conn.cursor() as cur:
                cur.execute("SELECT id::text FROM timestamp_records")
                rows = [r[0] for r in cur.fetchall()]
            conn.close()
            found = set(rows)
            lost = len(expected - found)
            if lost == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        gaps = sum(s["audit_gap_messages"] for s in (await self.sample()).values())
        return {"accepted_posts": len(set(self.accepted)), "produced": len(set(self.produced)), "rows": len(rows),
                "lost": lost, "unexpected": len(found - expected - in_doubt),
                "posts_in_doubt": self.posts_in_doubt, "in_doubt_stored": len(found & in_doubt),
                "duplicated_rows": len(rows) - len(found), "audit_gap_messages": gaps}


async def soak(bootstrap: str, server_url: str, minutes: float, interval: float, workers: int, post_rate: float,
               get_rate: float, produce_rate: float, workdir: Path, http_client: str = "vegeta") -> dict:
    # SIGTERM and SIGINT (even where a shell started the soak in the background, with SIGINT ignored)
    # cancel the run: its workers are stopped and its topic and database deleted on the way out.
    main_task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    started = dt.datetime.now(dt.timezone.utc)
    code = report.code_version()  # what the workers run: a commit made during the run is not it
    host = machine.host()  # before the load: how fast this machine runs Python today
    print(machine.speed_line(host), file=sys.stderr, flush=True)
    name = f"soak-{started:%Y%m%dT%H%M%S}"
    intervals = []
    binary = vegeta.vegeta_binary() if http_client == "vegeta" else None
    async with Soak(bootstrap, server_url, workdir, workers, name, binary) as run:
        for i in range(SEED_POSTS):  # ids for the first interval's GETs
            await run.post(i)
        stop = asyncio.Event()
        producer = asyncio.create_task(produce_at_rate(bootstrap, run.topic, produce_rate, stop, run.produced))
        begin = time.monotonic()
        try:
            while time.monotonic() - begin < minutes * 60 - 1:
                cpu = {f"worker-{n}": CpuShare(w.process.pid) for n, w in enumerate(run.workers)}
                post, get = await run.load(post_rate, get_rate, interval)
                cores = {name: share.cores() for name, share in cpu.items()}
                intervals.append({
                    "end_seconds": round(time.monotonic() - begin, 1),
                    "post": {k: post[k] for k in STEP_FIGURES},
                    "get": {k: get[k] for k in STEP_FIGURES},
                    "produced_total": len(run.produced),
                    # Cores in use: is the machine full (then connections and latency pile up)?
                    "cpu_cores": {"machine": next(iter(cores.values()))["machine"],
                                  **{name: c["worker"] for name, c in cores.items()}},
                    "workers": await run.sample(),
                })
                print(json.dumps({"minute": round(intervals[-1]["end_seconds"] / 60, 1),
                                  "post_p99_ms": post["p99_ms"], "get_p99_ms": get["p99_ms"],
                                  "rss_mb": [w["rss_mb"] for w in intervals[-1]["workers"].values()]}), flush=True)
        finally:
            stop.set()
            await producer
        audit = await run.wait_persisted(timeout=300)
    return {
        "kind": "soak",
        "started_at": started.isoformat(timespec="seconds"),
        "host": host,
        "code": code,
        "parameters": {"minutes": minutes, "interval_seconds": interval, "workers": workers,
                       "post_per_second": post_rate, "get_per_second": get_rate,
                       "produced_per_second": produce_rate, "http_client": http_client},
        # The workers inherit the environment: the allocator's settings shape their RSS.
        "allocator": {name: os.environ[name] for name in ("MALLOC_ARENA_MAX", "LD_PRELOAD") if name in os.environ},
        "intervals": intervals,
        "audit": audit,
        "verdicts": verdicts(intervals, audit),
    }


def plot(result: dict, path: Path) -> Path:
    """RSS, loop lag and HTTP p99 of each interval, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [i["end_seconds"] / 60 for i in result["intervals"]]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for name in result["intervals"][0]["workers"]:
        axes[0].plot(minutes, [i["workers"][name]["rss_mb"] for i in result["intervals"]], "o-", label=name)
        axes[0].plot(minutes, [sum(i["workers"][name].get("table_store_memory_mb", {}).values())
                               for i in result["intervals"]], "--", label=f"{name}: RocksDB")
        axes[1].plot(minutes, [i["workers"][name]["event_loop_lag_seconds"] * 1000 for i in result["intervals"]],
                     "o-", label=name)
    for method in ("post", "get"):
        axes[2].plot(minutes, [i[method]["p99_ms"] for i in result["intervals"]], "o-", label=f"{method.upper()} p99")
    for ax, label in zip(axes, ("RSS (MB)", "event-loop lag, max of 10 s (ms)", "latency (ms)")):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[2].set_xlabel("minutes")
    p = result["parameters"]
    fig.suptitle(f"Soak: {p['workers']} workers, {p['post_per_second']:g} POST/s, {p['get_per_second']:g} GET/s, "
                 f"{p['produced_per_second']:g} produced/s, sent by {p.get('http_client', 'python')} "
                 f"({result['started_at'][:10]})")
    return report.save_figure(fig, path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--post-rate", type=float, default=400.0)
    p.add_argument("--get-rate", type=float, default=400.0)
    p.add_argument("--produce-rate", type=float, default=1000.0, help="commands per second straight to Kafka")
    p.add_argument("--http-client", choices=("vegeta", "python"), default="vegeta",
                   help="what sends the requests: Vegeta (built by make vegeta) or this process's aiohttp")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--workdir", type=Path, default=Path("data/soak"), help="worker logs and state")
    p.add_argument("--plot", action="store_true", help="a PNG next to the JSON (needs matplotlib)")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(soak(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"], args.minutes,
                                  args.interval, args.workers, args.post_rate, args.get_rate, args.produce_rate,
                                  args.workdir, args.http_client))
    except asyncio.CancelledError:
        print("soak stopped by a signal; its workers, topic and database were removed", file=sys.stderr)
        return 130
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"soak-{result['started_at'][:19].replace('-', '').replace(':', '')}Z.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"result: {path}")
    if args.plot:
        print(f"plot: {plot(result, path.with_suffix('.png'))}")
    print(json.dumps({"audit": result["audit"], "verdicts": result["verdicts"]}, indent=1))
    return 0 if result["verdicts"]["nothing_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
