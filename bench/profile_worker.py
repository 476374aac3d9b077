"""py-spy profile of one project worker over a pre-loaded topic, summarised per part of the path.

    python -m bench.profile_worker --events 100000            # against .stack/env's Kafka and PostgreSQL
    python -m bench.profile_worker --summarise profile.txt    # an earlier raw profile again

Pre-loads EVENTS seed-format messages into a fresh 8-partition topic, starts one
worker (fresh group, fresh database), and from its first row to the last records
it with `py-spy record --gil -f raw` (py-spy from the `bench` extra; it attaches
with ptrace). `--gil` keeps only samples of the thread holding the GIL: Python
running, not waiting in select() or in a C call that released it (RocksDB
writes, libpq's I/O), so the sum is the Python CPU time, a little under the
process's. The summary gives, in µs per event (samples x interval / events),
each part of the path by the innermost frame of ours or of a library that
matches, and the hottest leaf functions. The topic and database are removed at
the end; the raw profile is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg2

from app.adapters.topics import ensure_topic
from bench.ceilings import delete_topic, drop_database, fresh_database, produce
from bench.live_worker import _stop, worker_env
from tests.worker_process import Worker

RATE = 500  # samples per second

# (label, substring of a frame "function (file:line)"); the first part found from the innermost
# frame outwards names the sample. Ours before the libraries they call, so that e.g. psycopg2's
# adaptation under our insert counts as "psycopg2", and a json call in Faust's code as Faust's.
PARTS = [
    ("decode + validate (app/domain/commands.py, rfc3339.py)", ("app/domain/commands.py", "app/domain/rfc3339.py")),
    ("table JSON (TimestampRecord.as_json)", ("as_json (app/domain/records.py",)),
    ("murmur2 partition of each key", ("murmur",)),
    ("psycopg2 / aiopg (adapt, execute, fetch)", ("psycopg2", "aiopg/")),
    ("table changelog write + store (tables/, faust_compat/table_store.py)",
     ("tables/changelog_batch_writer.py", "app/faust_compat/table_store.py", "rocksdict")),
    ("rest of the batch (batch_plan, batch_writer, metrics, tracing)",
     ("app/domain/", "app/sink/", "app/observability/", "agents/", "prometheus_client", "opentelemetry")),
    ("aiokafka (fetch, decode, produce)", ("aiokafka/",)),
    ("Faust / mode (consumer, conductor, stream, acks)", ("faust/", "mode/")),
    ("asyncio / other", ("",)),
]


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for label, needles in PARTS[:-1]:
            if any(needle in frame for needle in needles):
                return label
    return PARTS[-1][0]


def summarise(raw: Path, events: int, rate: int = RATE, top: int = 15) -> str:
    """Markdown: CPU µs per event by part, and the hottest leaf functions."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        stack = stack_text.split(";")[1:] if stack_text.startswith("process ") else stack_text.split(";")
        stack = [f for f in stack if not f.startswith("thread ") and not f.startswith("process ")]
        total += count
        parts[part_of(stack)] += count
        if stack:
            leaves[stack[-1]] += count
    per_event = 1e6 / rate / events  # µs of CPU per sample, per event
    lines = [f"{total:,} samples at {rate}/s over {events:,} events: {total * per_event:.0f} µs/event sampled",
             "", "| part (innermost matching frame) | µs/event | share |", "|---|---|---|"]
    for label, _ in PARTS:
        if parts[label]:
            lines.append(f"| {label} | {parts[label] * per_event:.1f} | {parts[label] / total:.0%} |")
    lines += ["", "| hottest leaf functions | µs/event |", "|---|---|"]
    for frame, count in leaves.most_common(top):
        lines.append(f"| `{frame.replace('|', '/')}` | {count * per_event:.1f} |")
    return "\n".join(lines)


async def profile(events: int, out: Path, workdir: Path) -> int:
    """Run the worker under py-spy; returns the events the profile covers."""
    bootstrap, server = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"]
    suffix = uuid.uuid4().hex[:8]
    topic, name = f"profile.{suffix}.live", f"profile-{suffix}"
    database = name.replace("-", "_")
    await ensure_topic(bootstrap, topic, 8, 1, {"retention.ms": "-1"})
    url = fresh_database(server, database)
    worker = Worker(worker_env(bootstrap, topic, name, url), workdir / f"{name}.log")
    spy = None
    try:
        await produce(bootstrap, topic, events)
        worker.start()
        await worker.wait_ready(120)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        deadline = time.monotonic() + 300 + events / 100
        first = 0
        try:
            while True:
                with conn.cursor() as cur:
                    try:
                        cur.execute("SELECT count(*) FROM timestamp_records")
                        rows = cur.fetchone()[0]
                    except psycopg2.errors.UndefinedTable:
                        rows = 0
                if rows and spy is None:
                    first = rows
                    spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-f", "raw", "-r", str(RATE),
                                            "-o", str(out), "--pid", str(worker.process.pid)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if rows >= events:
                    break
                if time.monotonic() > deadline or worker.process.poll() is not None:
                    raise RuntimeError(f"worker stopped or too slow at {rows} rows; see {worker.log_path}")
                await asyncio.sleep(0.25)
        finally:
            conn.close()
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes the profile and exits
                spy.wait(60)
    finally:
        _stop([worker])
        drop_database(server, database)
        await delete_topic(bootstrap, topic)
    return events - first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results") / f"profile-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt")
    parser.add_argument("--summarise", type=Path, help="only summarise this raw profile (with --events)")
    args = parser.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise, args.events))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="profile-") as workdir:
        covered = asyncio.run(profile(args.events, args.out, Path(workdir)))
    print(f"raw profile: {args.out} ({covered:,} events from the first row on)", file=sys.stderr)
    print(summarise(args.out, covered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
