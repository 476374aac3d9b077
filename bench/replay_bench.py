"""Replay throughput against ceilings measured in the same run.

    python bench/replay_bench.py                   # 50,000 events (with .stack/env sourced)
    python bench/replay_bench.py --events 1000000  # the disaster-recovery target: under 60 s

`make bench` runs its `measure_replay` as one section of the live bench.

Against the local stack (.stack/env): produces EVENTS seed-format messages to a
fresh topic, then measures
  1. raw Kafka consume: aiokafka reading the topic, no processing (ceiling 1);
  2. raw PostgreSQL insert: the same rows inserted with one multi-row
     unnest() statement per 2,000, nothing else (ceiling 2);
  3. `python -m app replay`'s code path into an empty database (measure_replay);
and reports events/s, the replay's ratio to each ceiling and the CPU time it
took (this process, and the PostgreSQL server when the stack names its pid).
Bounded: one topic, EVENTS messages, loopback only; the topic and databases
are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.adapters.database import Database  # noqa: E402
from app.adapters.topics import ensure_topic  # noqa: E402
from app.ops.replay import replay  # noqa: E402
from bench.ceilings import delete_topic, drop_database, fresh_database, produce, raw_consume, raw_insert  # noqa: E402

TARGET_SECONDS_PER_MILLION = 60.0


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _postgres_cpu_seconds() -> float | None:
    """CPU time of the stack's PostgreSQL server: the postmaster, its exited children, its live ones (Linux)."""
    pid = os.environ.get("STACK_POSTGRES_PID")
    if not pid or not Path(f"/proc/{pid}/stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def times(process: str) -> list[int]:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        return [int(fields[1])] + [int(value) for value in fields[11:15]]  # ppid, utime, stime, cutime, cstime

    try:
        _, utime, stime, cutime, cstime = times(pid)
        total = utime + stime + cutime + cstime
        for child in filter(str.isdigit, os.listdir("/proc")):
            try:
                ppid, utime, stime, _, _ = times(child)
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile, or not a process
            if str(ppid) == pid:
                total += utime + stime
    except OSError:
        return None
    return total / tick


async def measure_replay(bootstrap: str, topic: str, events: int, server_url: str) -> dict:
    """Replay a pre-loaded topic of `events` messages into a fresh, empty database, as `python -m app replay` does.

    The database is created on the server of `server_url` and dropped after.
    Returns events, seconds, events_per_second, rows_inserted, rows_already_present,
    invalid, failed, events_already_recorded, index_seconds, connections,
    cpu_seconds (this process) and postgres_cpu_seconds (None when unknown).
    """
    name = f"bench_replay_{uuid.uuid4().hex[:8]}"
    target = Database(fresh_database(server_url, name))
    cpu, postgres_cpu = _process_cpu_seconds(), _postgres_cpu_seconds()
    try:
        summary = await replay(bootstrap, topic, target, progress=False)
        cpu, postgres_after = _process_cpu_seconds() - cpu, _postgres_cpu_seconds()
    finally:
        await target.close()
        drop_database(server_url, name)
    if summary.events_read != events:
        raise RuntimeError(f"the replay read {summary.events_read} events from {topic}, {events} expected")
    return {
        "events": summary.events_read,
        "seconds": summary.seconds,
        "events_per_second": summary.rate,
        "rows_inserted": summary.rows_inserted,
        "rows_already_present": summary.rows_already_present,
        "invalid": summary.invalid,
        "failed": summary.failed,
        "events_already_recorded": summary.events_already_recorded,
        "index_seconds": summary.index_seconds,
        "connections": summary.groups,
        "cpu_seconds": cpu,
        "postgres_cpu_seconds": None if postgres_cpu is None or postgres_after is None else postgres_after - postgres_cpu,
    }


async def main(events: int) -> None:
    bootstrap, server = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"]
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.replay.{suffix}"
    await ensure_topic(bootstrap, topic, 8, 1, {})
    raw_db = f"bench_raw_{suffix}"
    try:
        started = time.perf_counter()
        await produce(bootstrap, topic, events)
        print(f"pre-loaded {events} events in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        consume_seconds, values = await raw_consume(bootstrap, topic, events)
        insert_seconds = raw_insert(fresh_database(server, raw_db), values)
        del values
        result = await measure_replay(bootstrap, topic, events, server)
    finally:
        await delete_topic(bootstrap, topic)
        drop_database(server, raw_db)
    assert result["rows_inserted"] == events, result
    consume_rate, insert_rate, rate = events / consume_seconds, events / insert_seconds, result["events_per_second"]
    per_million = 1e6 / rate
    print(f"events:                 {events}")
    print(f"raw Kafka consume:      {consume_rate:10.0f} events/s")
    print(f"raw PostgreSQL insert:  {insert_rate:10.0f} events/s")
    print(f"replay (end to end):    {rate:10.0f} events/s "
          f"({rate / consume_rate:.2f} of raw consume, {rate / insert_rate:.2f} of raw insert)")
    print(f"replay:                 {result['seconds']:.1f} s for {events} events, "
          f"{result['connections']} partition groups, secondary indexes built after in {result['index_seconds']:.1f} s")
    cpu = f"replay CPU:             {result['cpu_seconds'] / events * 1e6:.1f} us/event in the replay process"
    if result["postgres_cpu_seconds"] is not None:
        cpu += f", {result['postgres_cpu_seconds'] / events * 1e6:.1f} us/event in PostgreSQL"
    print(cpu)
    verdict = "under" if per_million < TARGET_SECONDS_PER_MILLION else "NOT under"
    print(f"per million events:     {per_million:.1f} s at this rate ({verdict} the {TARGET_SECONDS_PER_MILLION:.0f} s target)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().events))
