"""Table recovery: how long a worker takes to be ready as the history grows, with and without TABLE_RETENTION.

    python -m bench.recovery_bench --ids 200000,1000000      # also a section of `make bench`

For each history size H it writes the query table's changelog straight to
Kafka (the records a worker would have written: key the command id, value the
GET body), in three shapes:

- `full`: H ids, what a table without retention holds;
- `window`: H ids, then tombstones for all but WINDOW_FRACTION of them,
  compacted by the broker: what TABLE_RETENTION leaves once its expiry has run
  (the changelog settings the worker gives such a topic, with a 1 s segment);
- `window_only`: WINDOW_FRACTION x H ids and nothing else, the comparator: a
  bounded table should recover like a history that small.

and measures, with workers started as `make run` would (RocksDB store):

- `fresh`: a worker with an empty data directory, from launch to /health/ready;
- `restart`: the same worker stopped (SIGTERM) and started on its data directory;
- `scale_out`: a second, fresh worker joining it: the newcomer's time to ready,
  and the first worker's GET p99 meanwhile (open loop, GET_RATE/s);
- `standby_takeover`: once the first worker's standby copy of the newcomer's
  partitions is warm, the newcomer is SIGKILLed: the time until the first
  worker is ready with every partition again, and what it read meanwhile;
- `expired_get` (window only): GETs of expired ids, answered by PostgreSQL,
  open loop at EXPIRED_GET_RATE/s on one worker.

Changelog records read come from the workers' own counter
(timestamp_table_changelog_records_read_total), so "ids recovered per second"
is what the worker read over its time to ready (start-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.adapters.kafka_client import client_options
from app.adapters.topics import ensure_topic
from app.domain.records import SourcePosition, TimestampRecord
from bench.ceilings import delete_topic, drop_database, fresh_database, raw_insert
from bench.http_load import metric_value
from bench.latency import latency_stats
from bench.live_worker import worker_env
from tables.table_expiry import changelog_topic_config
from tests.worker_process import Worker

PARTITIONS = 8
WINDOW_FRACTION = 0.1
GET_RATE = 200.0
EXPIRED_GET_RATE = 500.0
EXPIRED_GET_SECONDS = 10.0
SAMPLE = 20_000  # ids GETs ask for (rows in PostgreSQL)
TAKEOVER_SAMPLE = 200  # ids asked of the survivor of a SIGKILL, until all come from its table
READ_METRIC = "timestamp_table_changelog_records_read_total"
REBALANCE_METRIC = "timestamp_rebalances_total"
READY_TIMEOUT = 900.0


def log(what: str) -> None:
    print(f"[recovery {time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def table_value(command_id: str, offset: int) -> bytes:
    """The JSON a worker puts in the table for a command (TimestampRecord.as_json)."""
    now = datetime.now(timezone.utc)
    record = TimestampRecord(id=uuid.UUID(command_id), event_timestamp=now, received_at=now, processed_at=now,
                             correlation_id=str(uuid.uuid4()), source=SourcePosition("bench", offset % PARTITIONS, offset))
    return record.as_json(created_at=now)


async def write_changelog(bootstrap: str, topic: str, writes: list[tuple[str, bytes | None]]) -> None:
    """Keyed by command id, partitioned by Kafka's default partitioner: as the worker writes them."""
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for start in range(0, len(writes), 10_000):
            futures = [await producer.send(topic, value, key=key.encode()) for key, value in writes[start:start + 10_000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def count_records(bootstrap: str, topic: str) -> tuple[int, int]:
    """(values, tombstones) left in the topic, read from the start."""
    consumer = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False, max_poll_records=10_000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values = tombstones = 0
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    if record.value is None:
                        tombstones += 1
                    else:
                        values += 1
        return values, tombstones
    finally:
        await consumer.stop()


async def build_changelog(bootstrap: str, app_id: str, ids: list[str], shape: str) -> dict:
    """The changelog of APP_ID's table in the given shape; returns what it holds when measured."""
    topic = f"{app_id}-timestamps-changelog"
    windowed = shape == "window"
    config = {"cleanup.policy": "compact", **(changelog_topic_config(1000, 1000) if windowed else {})}
    await ensure_topic(bootstrap, topic, PARTITIONS, 1, config)
    values = [(command_id, table_value(command_id, i)) for i, command_id in enumerate(ids)]
    await write_changelog(bootstrap, topic, values)
    if windowed:
        kept = int(len(ids) * WINDOW_FRACTION)
        await write_changelog(bootstrap, topic, [(command_id, None) for command_id in ids[kept:]])
        await _compact(bootstrap, topic, values[:kept], expected=kept)
    held, tombstones = await count_records(bootstrap, topic)
    return {"values": held, "tombstones": tombstones}


async def _compact(bootstrap: str, topic: str, live: list, expected: int, timeout: float = 300) -> None:
    """Let the broker's cleaner drop the expired values, then their tombstones (delete.retention.ms 1 s).

    Kafka never cleans the active segment, cleans a log only once enough of it is
    dirty, and drops a tombstone only at a clean after its delete horizon. So each
    round writes the live values again (as late duplicates would be), closes the
    segment behind them with a tiny write after segment.ms, and lets the
    cleaner (every 2 s on the local broker) run.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await write_changelog(bootstrap, topic, live)
        await asyncio.sleep(1.5)
        await _roll_segments(bootstrap, topic)
        await asyncio.sleep(5)
        held, tombstones = await count_records(bootstrap, topic)
        log(f"  compaction: {held:,} values, {tombstones:,} tombstones left")
        # What stays: the live values, and the segment-closing tombstones of the last rolls.
        if held <= expected * 1.05 and tombstones <= expected * 0.05 + 2 * PARTITIONS:
            return
    log("  compaction did not finish in time: measured on what is left")


async def _roll_segments(bootstrap: str, topic: str) -> None:
    """One tombstone of a key no command has, on each partition: it closes the active segment."""
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, None, key=b"bench-segment-roll", partition=p)
                               for p in range(PARTITIONS)])
    finally:
        await producer.stop()


async def metric(http: aiohttp.ClientSession, worker: Worker, name: str) -> float:
    async with http.get(f"{worker.url}/metrics") as response:
        return metric_value(await response.text(), name)


async def ready(http: aiohttp.ClientSession, worker: Worker) -> bool:
    try:
        async with http.get(f"{worker.url}/health/ready") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def until_ready(http: aiohttp.ClientSession, worker: Worker, since: float) -> float:
    """Seconds from `since` until the worker answers /health/ready with 200."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.process.returncode}; see {worker.log_path}")
        if await ready(http, worker):
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    raise TimeoutError(f"worker not ready after {READY_TIMEOUT:.0f} s; see {worker.log_path}")


async def get_load(http: aiohttp.ClientSession, worker: Worker, ids: list[str], rate: float,
                   stop: asyncio.Event) -> dict:
    """Open-loop GETs of random ids until `stop`: latency from each request's due time."""
    loop = asyncio.get_running_loop()
    latencies, errors, served_from, tasks = [], Counter(), Counter(), []
    start = loop.time()

    async def one(due: float) -> None:
        try:
            async with asyncio.timeout(5):
                async with http.get(f"{worker.url}/api/v1/timestamp/{random.choice(ids)}") as response:
                    await response.read()
                    served_from[response.headers.get("X-Served-From", "?")] += 1
                    if response.status != 200:
                        errors[str(response.status)] += 1
                        return
            latencies.append(loop.time() - due)
        except (TimeoutError, aiohttp.ClientError) as exc:
            errors[type(exc).__name__] += 1

    i = 0
    while not stop.is_set():
        due = start + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        tasks.append(asyncio.create_task(one(due)))
        i += 1
    await asyncio.gather(*tasks)
    return {"rate": rate, "requests": i, "errors": dict(errors), "served_from": dict(served_from),
            **latency_stats(latencies)}


async def measure_shape(bootstrap: str, server_url: str, ids: list[str], shape: str, name: str,
                        workdir: Path, http: aiohttp.ClientSession) -> dict:
    """Every measurement for one changelog shape; the workers, topics and database are gone after it."""
    topic, app_id, database = f"bench.{name}", f"bench-{name}", name.replace("-", "_")
    await ensure_topic(bootstrap, topic, PARTITIONS, 1, {"retention.ms": "-1"})
    log(f"{shape}: writing the changelog of {len(ids):,} ids")
    result: dict = {"shape": shape, "ids_written": len(ids), "changelog": await build_changelog(
        bootstrap, app_id, ids, shape)}
    url = fresh_database(server_url, database)
    # PostgreSQL holds every id a GET asks for, as it does in production: a worker answers from it
    # what its table lacks (a partition still recovering, an expired id).
    sample = ids[:max(1, int(len(ids) * WINDOW_FRACTION))][:SAMPLE]  # held by the table in every shape
    raw_insert(url, [{"command_id": i, "event_timestamp": "2024-02-29T12:00:00Z"} for i in sample])
    env = worker_env(bootstrap, topic, app_id, url, TABLE_STORE="rocksdb://",
                     **({"TABLE_RETENTION": "forever"} if shape != "window" else {}))
    first = Worker(env, workdir / f"{name}-a.log")
    second = Worker(env, workdir / f"{name}-b.log")
    try:
        log(f"{shape}: a fresh worker")
        started = time.monotonic()
        first.start()
        seconds = await until_ready(http, first, started)
        read = await metric(http, first, READ_METRIC)
        result["fresh"] = {"seconds_to_ready": round(seconds, 2), "records_read": int(read),
                           "records_read_per_second": round(read / seconds, 1)}

        log(f"{shape}: a restart on its data directory")
        first.stop(timeout=60)
        started = time.monotonic()
        first.start()
        seconds = await until_ready(http, first, started)
        result["restart"] = {"seconds_to_ready": round(seconds, 2),
                             "records_read": int(await metric(http, first, READ_METRIC))}

        log(f"{shape}: scale-out to two workers")
        stop = asyncio.Event()
        load = asyncio.create_task(get_load(http, first, sample, GET_RATE, stop))
        started = time.monotonic()
        second.start()
        try:
            seconds = await until_ready(http, second, started)
        finally:
            stop.set()
            gets = await load
        result["scale_out"] = {"seconds_to_ready": round(seconds, 2),
                               "records_read": int(await metric(http, second, READ_METRIC)),
                               "running_worker_gets": gets}

        log(f"{shape}: standby takeover")
        result["standby_takeover"] = await _takeover(http, first, second, sample[:TAKEOVER_SAMPLE])

        if shape == "window":
            result["expired_get"] = await _expired_gets(http, first, url, ids)
    finally:
        first.stop()
        second.stop()
        drop_database(server_url, database)
        for doomed in (topic, f"{app_id}-timestamps-changelog"):
            try:
                await delete_topic(bootstrap, doomed)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on; the run's result stands
                log(f"could not delete {doomed}: {exc}")
    return result


async def _takeover(http: aiohttp.ClientSession, survivor: Worker, victim: Worker, sample: list[str]) -> dict:
    """SIGKILL `victim` once `survivor`'s standby copy stopped moving; until the survivor serves every
    sampled id from its table, and until it is ready with every partition again."""
    previous, steady_since = -1.0, time.monotonic()
    while time.monotonic() - steady_since < 3:  # the standby copy has read what there was
        read = await metric(http, survivor, READ_METRIC)
        if read != previous:
            previous, steady_since = read, time.monotonic()
        await asyncio.sleep(0.5)
    rebalances = await metric(http, survivor, REBALANCE_METRIC)
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    victim.process.wait(10)
    deadline, served = killed + READY_TIMEOUT, None
    while time.monotonic() < deadline:
        if served is None and all([await _served_from(http, survivor, i) == "table" for i in sample]):
            served = time.monotonic() - killed
        if await metric(http, survivor, REBALANCE_METRIC) > rebalances and await ready(http, survivor):
            break
        await asyncio.sleep(0.1)
    seconds = time.monotonic() - killed
    while served is None and time.monotonic() < deadline:
        if all([await _served_from(http, survivor, i) == "table" for i in sample]):
            served = time.monotonic() - killed
    return {"seconds_to_keys_served_from_table": round(served, 2) if served is not None else None,
            "seconds_to_ready_with_all_partitions": round(seconds, 2),
            "session_timeout_seconds": float(os.environ.get("KAFKA_SESSION_TIMEOUT_SECONDS", 10)),
            "records_read_at_takeover": int(await metric(http, survivor, READ_METRIC) - previous)}


async def _served_from(http: aiohttp.ClientSession, worker: Worker, command_id: str) -> str | None:
    try:
        async with http.get(f"{worker.url}/api/v1/timestamp/{command_id}") as response:
            return response.headers.get("X-Served-From")
    except aiohttp.ClientError:
        return None


async def _expired_gets(http: aiohttp.ClientSession, worker: Worker, url: str, ids: list[str]) -> dict:
    """GETs of expired ids (rows in PostgreSQL, not in the table), open loop on one worker."""
    expired = ids[int(len(ids) * WINDOW_FRACTION):][:SAMPLE]
    raw_insert(url, [{"command_id": i, "event_timestamp": "2024-02-29T12:00:00Z"} for i in expired])
    stop = asyncio.Event()
    warm_up = asyncio.create_task(get_load(http, worker, expired, EXPIRED_GET_RATE, stop))  # opens the pool
    await asyncio.sleep(2)
    stop.set()
    await warm_up
    stop = asyncio.Event()
    load = asyncio.create_task(get_load(http, worker, expired, EXPIRED_GET_RATE, stop))
    await asyncio.sleep(EXPIRED_GET_SECONDS)
    stop.set()
    return await load


async def measure_recovery(bootstrap: str, server_url: str, histories: list[int], workdir: Path) -> list[dict]:
    """Every shape at every history size; a list of `measure_shape` results with their history size."""
    results = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for history in histories:
            ids = [str(uuid.uuid4()) for _ in range(history)]
            for shape in ("full", "window", "window_only"):
                written = ids if shape != "window_only" else ids[:int(history * WINDOW_FRACTION)]
                name = f"rec-{uuid.uuid4().hex[:6]}-{shape.replace('_', '')}"
                result = await measure_shape(bootstrap, server_url, written, shape, name, workdir, http)
                results.append({"history": history, **result})
                log(json.dumps(results[-1]))
    return results


def window_ratios(results: list[dict]) -> dict[str, float]:
    """Per history: fresh time to ready with the window / with only the window's ids (target <= 1.5)."""
    by = {(r["history"], r["shape"]): r for r in results}
    return {str(h): round(by[(h, "window")]["fresh"]["seconds_to_ready"]
                          / by[(h, "window_only")]["fresh"]["seconds_to_ready"], 2)
            for h in sorted({r["history"] for r in results})
            if (h, "window") in by and (h, "window_only") in by}


async def _cancellable(run):
    """SIGTERM and SIGINT cancel the run, so its workers stop and its topics and databases go."""
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    return await run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recovery_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", default="200000,1000000", help="history sizes, comma-separated")
    args = p.parse_args(argv)
    histories = [int(x) for x in args.ids.split(",")]
    with tempfile.TemporaryDirectory(prefix="recovery-bench-") as workdir:
        results = asyncio.run(_cancellable(measure_recovery(
            os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"], histories, Path(workdir))))
    print(json.dumps({"runs": results, "window_fraction": WINDOW_FRACTION, "window_ratio": window_ratios(results)},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
