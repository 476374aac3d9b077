"""The live path and its ceilings, in one run:

    make bench                                   # 200,000 events, the full HTTP ladder
    make bench EVENTS=50000
    python -m bench --events 3000 --post-rates 50,100 --get-rates 50,100 --http-duration 2   # a smoke

Against the local stack (.stack/env: KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL):

 1. pre-loads EVENTS seed-format messages into a fresh 8-partition topic;
 2. over that same topic, each with a fresh consumer group: a raw aiokafka
    consume, a raw PostgreSQL batch insert of the same rows (a fresh
    database), the replay (bench.replay_bench.measure_replay), a bare Faust
    agent with the project's Faust settings (bench/bare_faust.py), then the
    project's worker, one process and then two (a fresh database each), from
    the first row to EVENTS rows: events/s, the workers' CPU µs per event and
    the ratio to the bare agent;
 3. the record reader alone (bench/record_reader_bench.py): CPU µs per record
    of aiokafka's reader, of the worker's (which reads again, tolerantly, a
    batch aiokafka cannot decode), and of that fallback;
 4. open-loop HTTP POST and GET at each rate against one fresh worker that is
    also processing: p50/p99/max from the scheduled send time, errors by
    status or timeout, and the highest rate with p99 < 50 ms;
 5. table recovery at each --recovery-ids history size (bench/recovery_bench.py):
    time to ready of a fresh worker, of a restart, of a scale-out, the standby
    takeover after a SIGKILL, with and without a TABLE_RETENTION window.

Prints a table and writes bench/results/live-<UTC time>.json (and, with
--plot, a PNG of latency against rate). Loopback only; every load has a count
or a duration; the topics and databases it creates are deleted at the end.
Workers run with the caller's environment (BATCH_SIZE=2000 make bench works),
recorded in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path


from app.adapters.topics import ensure_topic
from app.settings import SETTINGS
from bench import machine, report
from bench.ceilings import (BATCH, delete_topics_containing, drop_database, fresh_database, produce, raw_consume,
                            raw_insert)
from bench.http_load import measure_http
from bench.live_worker import measure_bare_faust, measure_workers
from bench.record_reader_bench import measure_record_reader
from bench.recovery_bench import WINDOW_FRACTION, measure_recovery, window_ratios
from bench.replay_bench import measure_replay

PARTITIONS = 8
DEFAULT_RATES = "250,500,1000,2000,4000"
# What the bench sets itself for each worker; every other setting comes from the caller's environment.
BENCH_SET = {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "COMMAND_TOPIC", "APP_ID"}


def _rates(text: str) -> list[float]:
    rates = [float(r) for r in text.split(",") if r.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("a comma-separated list of positive rates")
    return rates


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000, help="messages pre-loaded (default 200,000)")
    p.add_argument("--post-rates", type=_rates, default=_rates(DEFAULT_RATES), help=f"default {DEFAULT_RATES}")
    p.add_argument("--get-rates", type=_rates, default=_rates(DEFAULT_RATES), help=f"default {DEFAULT_RATES}")
    p.add_argument("--http-duration", type=float, default=10.0, help="seconds per rate (default 10)")
    p.add_argument("--http-client", choices=("vegeta", "python"), default="vegeta",
                   help="what sends the HTTP steps: vegeta (a Go load generator, built on first use; default) "
                        "or python (an aiohttp client in this process, which competes with the worker for CPU)")
    p.add_argument("--http-timeout", type=float, default=5.0, help="client timeout per request (default 5 s)")
    p.add_argument("--get-background-rate", type=float, default=500.0,
                   help="events/s produced straight to Kafka during GET steps (default 500)")
    p.add_argument("--recovery-ids", default="200000,1000000",
                   help="history sizes of the recovery section, comma-separated; 0 skips it (default 200000,1000000)")
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR, help="where the JSON goes")
    p.add_argument("--plot", action="store_true", help="also write the latency plot next to the JSON")
    p.add_argument("--keep-logs", action="store_true", help="keep the workers' logs (printed path)")
    return p


def worker_environment() -> dict[str, str]:
    """The settings and OpenTelemetry variables the caller set for the workers."""
    return {k: v for k, v in sorted(os.environ.items())
            if (k in SETTINGS and k not in BENCH_SET) or k.startswith("OTEL_")}


async def run(args: argparse.Namespace, workdir: Path) -> dict:
    bootstrap, server = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"]
    # SIGTERM (and SIGINT, even where a shell started the bench with it ignored) cancels the run:
    # the workers are stopped and the topics and databases deleted on the way out.
    main_task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    events = args.events
    suffix = uuid.uuid4().hex[:8]
    prefix = f"bench-{suffix}"
    topic = f"bench.{suffix}.live"
    timeout = 300 + events / 100  # bounds every consumer's run: 2,300 s at 200,000 events
    started = datetime.now(timezone.utc)
    wall = time.perf_counter()
    result: dict = {
        "schema_version": 1,
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "host": machine.host(),
        "code": report.code_version(),
        "parameters": {
            "events": events, "partitions": PARTITIONS, "topic": topic,
            "post_rates": args.post_rates, "get_rates": args.get_rates,
            "http_duration_seconds": args.http_duration, "http_timeout_seconds": args.http_timeout,
            "http_client": args.http_client,
            "get_background_events_per_second": args.get_background_rate,
            "recovery_ids": args.recovery_ids,
            "worker_environment": worker_environment(),
        },
    }
    raw_db = f"bench_{suffix}_raw"

    def step(what: str) -> None:
        print(f"[bench {time.perf_counter() - wall:6.0f}s] {what}", file=sys.stderr, flush=True)

    try:
        await ensure_topic(bootstrap, topic, PARTITIONS, 1, {"retention.ms": "-1"})
        step(f"pre-loading {events:,} messages into {topic}")
        t = time.perf_counter()
        await produce(bootstrap, topic, events)
        result["preload"] = _rate_of(events, time.perf_counter() - t)

        step("record reader: aiokafka's against the worker's (CPU, in process)")
        result["record_reader"] = measure_record_reader(min(events, 100_000))

        step("raw aiokafka consume")
        seconds, values = await raw_consume(bootstrap, topic, events)
        consume = _rate_of(len(values), seconds)
        step("raw PostgreSQL insert")
        insert = {**_rate_of(len(values), raw_insert(fresh_database(server, raw_db), values)), "batch": BATCH}
        del values
        drop_database(server, raw_db)
        result["ceilings"] = {"raw_consume": consume, "raw_insert": insert}

        step("replay")
        result["replay"] = await measure_replay(bootstrap, topic, events, server)

        step("bare Faust agent")
        bare = await measure_bare_faust(bootstrap, topic, events, f"{prefix}-bare", workdir, timeout)
        result["bare_faust"] = bare

        result["workers"] = []
        for processes in (1, 2):
            step(f"project worker x{processes}")
            run_ = await measure_workers(bootstrap, server, topic, events, processes, f"{prefix}-w{processes}",
                                         workdir, timeout)
            run_["ratio_to_bare_faust"] = round(run_["events_per_second"] / bare["events_per_second"], 3)
            if processes > 1:
                one = result["workers"][0]["events_per_second"]
                run_["ratio_to_one_worker"] = round(run_["events_per_second"] / one, 3)
            result["workers"].append(run_)

        step(f"HTTP: POST at {args.post_rates}, GET at {args.get_rates} per second")
        result["http"] = await measure_http(
            bootstrap, server, f"{prefix}-http", workdir, args.post_rates, args.get_rates, args.http_duration,
            args.get_background_rate, timeout=args.http_timeout, client=args.http_client,
        )

        histories = [int(x) for x in args.recovery_ids.split(",") if int(x) > 0]
        if histories:
            step(f"table recovery at {histories} ids")
            recovery = await measure_recovery(bootstrap, server, histories, workdir)
            result["recovery"] = {"runs": recovery, "window_fraction": WINDOW_FRACTION,
                                  "window_ratio": window_ratios(recovery)}
    finally:
        step("cleaning up topics and databases")
        drop_database(server, raw_db)
        await delete_topics_containing(bootstrap, suffix)
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    return result


def _rate_of(events: int, seconds: float) -> dict:
    return {"events": events, "seconds": round(seconds, 3), "events_per_second": round(events / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        if not os.environ.get(name):
            print(f"{name} is not set: run `make bench`, or source .stack/env (make stack-up)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    ok = False
    try:
        result = asyncio.run(run(args, workdir))
        ok = True
    except asyncio.CancelledError:
        print("bench stopped by a signal; its topics and databases were removed", file=sys.stderr)
        return 130
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"worker logs: {workdir}", file=sys.stderr)
    path = report.write_json(result, args.results_dir)
    print(report.text(result))
    print(f"\nresult: {path}")
    if args.plot:
        print(f"plot: {report.plot(result, path.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
