"""Replay throughput against ceilings measured in the same run.

    make bench                  # 50,000 events
    make bench EVENTS=200000

Against the local stack (.stack/env): produces EVENTS seed-format messages to a
fresh topic, then measures
  1. raw Kafka consume: aiokafka reading the topic, no processing (ceiling 1);
  2. raw PostgreSQL insert: the same rows inserted with one multi-row
     unnest() statement per 2,000, nothing else (ceiling 2);
  3. `python -m app replay`'s code path into an empty database;
and reports events/s and the replay's ratio to each ceiling. Bounded: one
topic, EVENTS messages, loopback only; the topic and databases are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.database import Database  # noqa: E402
from app.replay import replay  # noqa: E402
from app.topics import ensure_topic  # noqa: E402
from bench.ceilings import BATCH, delete_topic, drop_database, fresh_database, produce, raw_consume, raw_insert  # noqa: E402


async def main(events: int) -> None:
    bootstrap, server = os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"]
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.replay.{suffix}"
    await ensure_topic(bootstrap, topic, 8, 1, {})
    raw_db, replay_db = f"bench_raw_{suffix}", f"bench_replay_{suffix}"
    try:
        await produce(bootstrap, topic, events)
        consume_seconds, values = await raw_consume(bootstrap, topic, events)
        insert_seconds = raw_insert(fresh_database(server, raw_db), values)
        target = Database(fresh_database(server, replay_db))
        summary = await replay(bootstrap, topic, target, batch_size=BATCH, progress=False)
        await target.close()
    finally:
        await delete_topic(bootstrap, topic)
        drop_database(server, raw_db)
        drop_database(server, replay_db)
    assert summary.rows_inserted == events, summary
    consume_rate, insert_rate = events / consume_seconds, events / insert_seconds
    print(f"events:                 {events}")
    print(f"raw Kafka consume:      {consume_rate:10.0f} events/s")
    print(f"raw PostgreSQL insert:  {insert_rate:10.0f} events/s")
    print(f"replay (end to end):    {summary.rate:10.0f} events/s "
          f"({summary.rate / consume_rate:.2f} of raw consume, {summary.rate / insert_rate:.2f} of raw insert)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().events))
