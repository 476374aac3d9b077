"""TEST-ONLY launcher: a worker with an injected fault. Never deploy it.

    FAULT_STAGE=enrich FAULT_COMMAND_IDS=<uuid>,<uuid> python tests/faulty_worker.py worker --web-port PORT

The product has no fault switch: this file hands the real pipeline one faulty
part (`app.use`, built by `app.bootstrap.bootstrap` at start-up; nothing is
patched) before starting the Faust CLI of `app.main.app`, and it lives under
tests/, which the package and the image do not contain.

FAULT_STAGE:
  enrich    a bug in enrichment: `enrich` raises RuntimeError for the marked ids
  database  PostgreSQL refuses the data: `persist_batch` raises DataError when a marked id is in the batch
  table     the table update raises RuntimeError when a marked id is in it
  hold      the table update waits FAULT_HOLD_SECONDS when a marked id is in it (PostgreSQL written, the
            batch held: long enough for a test to freeze the worker holding it)
  outage    PostgreSQL is unreachable: every `persist_batch` raises OperationalError (transient)
  escape    a bug outside isolation: `BatchWriter.write` raises before writing a batch with a marked id
  unreadable  no reader can read a record whose header name is not UTF-8 (the tolerant reader refuses it too)
  paused    on SIGUSR2, Faust stops fetching partition FAULT_PARTITION of the command topic
            (`Consumer.pause_partitions`, as a rebalance does), and nothing resumes it
FAULT_TIMES: how often each marked id raises (default 0: every time).
"""

from __future__ import annotations

import collections
import functools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: `app` is importable

import psycopg2  # noqa: E402

STAGE = os.environ["FAULT_STAGE"]
MARKED = {i.strip() for i in os.environ.get("FAULT_COMMAND_IDS", "").split(",") if i.strip()}
TIMES = int(os.environ.get("FAULT_TIMES", "0"))
raised: collections.Counter = collections.Counter()


def should_raise(ids) -> str | None:
    for command_id in map(str, ids):
        if command_id in MARKED and (TIMES == 0 or raised[command_id] < TIMES):
            raised[command_id] += 1
            return command_id
    return None


def faulty_parts() -> dict:
    """The parts to build the worker with (`app.use`, then `app.bootstrap.bootstrap`): product
    subclasses or wrapped functions that raise for the marked ids."""
    if STAGE == "enrich":
        from app.domain.batch_plan import enrich as real_enrich
        from app.domain.batch_plan import plan_batch

        def enrich(command, source, processed_at):
            if should_raise([command.command_id]):
                raise RuntimeError(f"injected fault in enrich for {command.command_id}")
            return real_enrich(command, source, processed_at)

        return {"plan": functools.partial(plan_batch, enrich=enrich)}
    if STAGE in ("database", "outage"):
        from app.adapters.database import Database

        class FaultyDatabase(Database):
            async def persist_batch(self, plan):
                if STAGE == "outage":
                    raise psycopg2.OperationalError("injected outage: server closed the connection unexpectedly")
                if should_raise([r.id for r in plan.records]):
                    raise psycopg2.errors.DataError("injected DataError: value out of range")
                return await super().persist_batch(plan)

        return {"database": FaultyDatabase}
    if STAGE in ("table", "hold"):
        import asyncio

        from tables.timestamps_by_id import TimestampTableWriter

        class FaultyTableWriter(TimestampTableWriter):
            async def update(self, records, inserted):
                if should_raise([r.id for r in records]):
                    if STAGE == "hold":
                        await asyncio.sleep(float(os.environ.get("FAULT_HOLD_SECONDS", "3")))
                    else:
                        raise RuntimeError("injected fault in the table update")
                return await super().update(records, inserted)

        return {"table_writer": FaultyTableWriter}
    if STAGE == "escape":
        from app.domain.commands import decode_command
        from app.sink.batch_writer import BatchWriter

        class EscapingBatchWriter(BatchWriter):
            async def write(self, messages):
                ids = []
                for message in messages:
                    try:
                        ids.append(decode_command(message.value).command_id)
                    except ValueError:
                        pass
                if should_raise(ids):
                    raise RuntimeError("injected fault escaping the sink")
                return await super().write(messages)

        return {"batch_writer": EscapingBatchWriter}
    if STAGE == "unreadable":
        from app.domain.kafka_headers import undecodable_header_names
        from app.faust_compat.kafka_record_reader import TolerantMemoryRecords

        class RefusingBatch(TolerantMemoryRecords.tolerant_batch):
            def _read_msg(self, *args):
                record = super()._read_msg(*args)
                if undecodable_header_names(record.headers):
                    raise ValueError("injected: this record cannot be read")
                return record

        return {"tolerant_batch": RefusingBatch}
    if STAGE == "paused":
        return {}
    raise SystemExit(f"FAULT_STAGE={STAGE!r}: not a known stage")


from app.main import app  # noqa: E402

app.use(**faulty_parts())

if STAGE == "paused":
    import asyncio
    import signal

    @app.task
    async def pause_on_sigusr2() -> None:
        from app.settings import settings

        def pause() -> None:
            tp = next(tp for tp in app.consumer.assignment()
                      if tp.topic == settings.command_topic and tp.partition == int(os.environ["FAULT_PARTITION"]))
            app.consumer.pause_partitions({tp})
            print(f"injected: {tp.topic}[{tp.partition}] paused", file=sys.stderr, flush=True)

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, pause)

if __name__ == "__main__":
    app.main()  # the Faust CLI, reading sys.argv
