"""Operator commands.

    python -m app migrate
    python -m app replay [--from earliest|RFC3339|P:O,...] [--to latest|RFC3339] [--database-url URL]
                         [--connections N] [--batch-size N] [--no-progress]
    python -m app rebuild-table
    python -m app dead-letters list
    python -m app dead-letters republish PARTITION:OFFSET [...]
    python -m app audit [--repair] [--json] [--topic T] [--group G] [--database-url URL]
    python -m app workers [--count N] [--base-port 6066] [--host 127.0.0.1] [--log-level LEVEL]

Exit codes: 0 done (audit: no gaps), 1 the audit found gaps, 2 usage or
configuration error, 3 the audit could not read Kafka or PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from app.settings import LOG_LEVELS

BULK_BATCH_SIZE, BULK_CONNECTIONS = 5000, 2  # app.ops.replay's defaults (not imported: --help stays light)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Operator commands of the timestamp pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    replay = commands.add_parser(
        "replay", help="rebuild PostgreSQL from the command topic (idempotent; never touches the live group)")
    replay.add_argument("--from", dest="start", default="earliest",
                        help="earliest (default), an RFC 3339 timestamp, or offsets per partition: 0:120,3:88")
    replay.add_argument("--to", dest="stop", default="latest",
                        help="latest (default: the end offsets when the replay starts) or an RFC 3339 timestamp")
    replay.add_argument("--database-url", help="target database (default: DATABASE_URL); may be empty, "
                        "the schema is created")
    replay.add_argument("--topic", help="topic to read (default: COMMAND_TOPIC)")
    replay.add_argument("--batch-size", type=int, default=None,
                        help="events per database transaction (default: %d)" % BULK_BATCH_SIZE)
    replay.add_argument("--connections", type=int, default=None,
                        help="partition groups read and written in parallel, one PostgreSQL connection each "
                        "(default: %d)" % BULK_CONNECTIONS)
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    rebuild = commands.add_parser(
        "rebuild-table", help="refill the query table's changelog from PostgreSQL (then restart the workers)")
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar")
    dead = commands.add_parser("dead-letters", help="list dead letters, or publish chosen ones again after a fix")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    dead_commands.add_parser("list", help="one line per dead letter: position, original position, reason")
    again = dead_commands.add_parser("republish", help="publish dead letters to the command topic again")
    again.add_argument("positions", nargs="+", metavar="PARTITION:OFFSET",
                       help="positions in the dead-letter topic, as printed by `list`")
    audit = commands.add_parser(
        "audit", help="find messages below the group's committed offset without a processed_events row "
        "(exit 1 when there are any)")
    audit.add_argument("--topic", help="topic to audit (default: COMMAND_TOPIC)")
    audit.add_argument("--group", help="consumer group whose committed offsets are audited (default: APP_ID)")
    audit.add_argument("--database-url", help="database to audit (default: DATABASE_URL)")
    audit.add_argument("--json", action="store_true", help="print the report as one JSON object")
    audit.add_argument("--stall-seconds", type=float,
                       help="a partition behind its end whose oldest unprocessed record is older than this, and "
                            "whose committed offset does not move, is stalled (default: PARTITION_STALL_SECONDS)")
    audit.add_argument("--stall-confirm-seconds", type=float, default=10.0,
                       help="how long to watch a candidate's committed offset before calling it stalled (default 10)")
    audit.add_argument("--repair", action="store_true",
                       help="replay exactly the missing ranges (idempotent), then audit again")
    acls = commands.add_parser(
        "acls", help="print the kafka-acls.sh commands that grant a worker exactly what it needs "
        "(for APP_ID, COMMAND_TOPIC, DEAD_LETTER_TOPIC, KAFKA_CREATE_TOPICS, PROCESSING_GUARANTEE)")
    acls.add_argument("--principal", required=True, help="e.g. User:timestamp-worker")
    acls.add_argument("--bootstrap", default="$BOOTSTRAP", help="the --bootstrap-server in the commands")
    workers = commands.add_parser(
        "workers", help="run N workers of one consumer group on this host, on ports BASE, BASE+1, ... "
        "(Ctrl-C or SIGTERM stops them all)")
    workers.add_argument("--count", type=int, default=os.cpu_count() or 1, help="workers (default: one per core)")
    workers.add_argument("--base-port", type=int, default=6066, help="web port of the first worker (default 6066)")
    workers.add_argument("--host", default="127.0.0.1", help="web host and bind address (default 127.0.0.1)")
    workers.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                         help="lowest level the workers log; sets their LOG_LEVEL (default: LOG_LEVEL, else INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from app.settings import SettingsError

    try:
        from app.settings import settings
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "workers":
        from app.ops.workers import LaunchError, run

        try:
            return run(args.count, args.base_port, args.host, args.log_level, settings)
        except LaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    if args.command == "acls":
        from app.ops.acls import kafka_acls_commands, worker_acls

        acl_set = worker_acls(settings.app_id, settings.command_topic, settings.dead_letter_topic,
                              create_topics=settings.kafka_create_topics,
                              exactly_once=settings.processing_guarantee == "exactly_once")
        print("\n".join(kafka_acls_commands(args.principal, acl_set, args.bootstrap)))
        return 0

    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(name)s - %(message)s")
    from app.observability.logs import SecretFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(SecretFilter())
    from app.adapters.database import Database, apply_migrations
    from app.faust_compat import kafka_record_reader

    kafka_record_reader.install()  # the replay, the audit and the dead-letter tools read records too

    if args.command == "migrate":
        applied = apply_migrations(settings.database_dsn())
        print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
        return 0

    if args.command == "dead-letters":
        return asyncio.run(_dead_letters(settings, args))

    if args.command == "audit":
        return asyncio.run(_audit(settings, args, Database(args.database_url or settings.database_dsn)))

    from app.ops.replay import ReplayError, parse_start, parse_stop, rebuild_table

    if args.command == "replay":
        try:
            start, stop = parse_start(args.start), parse_stop(args.stop)
        except ReplayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        database = Database(args.database_url or settings.database_dsn)
        try:
            summary = asyncio.run(_run_replay(settings, database, args, start, stop))
        except ReplayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("\n".join(summary.lines()))
        return 0

    database = Database(settings.database_dsn)
    changelog = f"{settings.app_id}-timestamps-changelog"
    written = asyncio.run(_closing(database, rebuild_table(
        settings.kafka, changelog, database, progress=not args.no_progress)))
    print(f"records written to {changelog}: {written}; restart the workers to recover the table from it")
    return 0


async def _dead_letters(settings, args) -> int:
    from app.domain.dead_letters import describe
    from app.ops.dead_letters import read_dead_letters, republish

    records = await read_dead_letters(settings.kafka, settings.dead_letter_topic)
    if args.action == "list":
        for r in records:
            info = describe(r.headers)
            print(f"{r.partition}:{r.offset}\t{info.get('dlq.original.topic')}[{info.get('dlq.original.partition')}]"
                  f"@{info.get('dlq.original.offset')}\t{info.get('correlation_id', '-')}\t{info.get('dlq.reason')}"
                  f"\t{(r.value or b'')[:80]!r}")
        print(f"{len(records)} dead letters in {settings.dead_letter_topic}")
        return 0
    by_position = {f"{r.partition}:{r.offset}": r for r in records}
    unknown = [p for p in args.positions if p not in by_position]
    if unknown:
        print(f"error: no dead letter at {', '.join(unknown)} in {settings.dead_letter_topic}", file=sys.stderr)
        return 2
    count = await republish(settings.kafka, [by_position[p] for p in args.positions],
                            settings.command_topic)
    print(f"republished {count} dead letters to {settings.command_topic}")
    return 0


async def _audit(settings, args, database) -> int:
    import json

    import psycopg2
    from aiokafka.errors import KafkaError

    from app.adapters.topics import topic_partitions
    from app.ops.audit import AuditError, KafkaView, audit, find_stalls, isolation_level
    from app.ops.replay import replay_ranges

    topic, group = args.topic or settings.command_topic, args.group or settings.app_id
    try:
        partitions = await topic_partitions(settings.kafka, topic)
        if not partitions:
            print(f"error: topic {topic!r} does not exist", file=sys.stderr)
            return 2
        kafka = KafkaView(settings.kafka, topic, isolation_level(settings.processing_guarantee))
        async with kafka:
            report = await audit(kafka, database, group, partitions)
            repair = None
            if args.repair and report.missing:
                if not args.json:
                    print("\n".join(report.lines()) + "\n\nrepairing (replaying exactly these ranges):")
                # Messages in a gap were never processed, so their dead letters were never sent.
                dead_letters = settings.dead_letter_topic if topic == settings.command_topic else f"{topic}.dlq"
                summary = await replay_ranges(settings.kafka, topic, database, report.ranges(),
                                              progress=not args.json and sys.stderr.isatty(),
                                              limits=settings.decode_limits, dead_letter_topic=dead_letters)
                repair = {"ranges": {p: [list(r) for r in spans] for p, spans in report.ranges().items()},
                          "events_read": summary.events_read, "rows_inserted": summary.rows_inserted,
                          "rows_already_present": summary.rows_already_present, "invalid": summary.invalid,
                          "failed": summary.failed}
                if not args.json:
                    print("\n".join(summary.lines()) + "\n\naudit after the repair:")
                report = await audit(kafka, database, group, partitions)
            stall_seconds = args.stall_seconds if args.stall_seconds is not None else settings.partition_stall_seconds
            stalls = await find_stalls(kafka, group, partitions, stall_seconds, args.stall_confirm_seconds)
    except (AuditError, KafkaError, psycopg2.Error, OSError, asyncio.TimeoutError) as exc:
        print(f"error: the audit could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    finally:
        await database.close()
    if args.json:
        print(json.dumps({**report.as_dict(), **stalls.as_dict(), **({"repair": repair} if repair else {})}))
    else:
        print("\n".join(stalls.lines() + report.lines()))
    if not report.committed_any:
        print(f"warning: group {group!r} has no committed offset on {topic}: nothing was audited "
              "(check --group)", file=sys.stderr)
    return 1 if report.missing or stalls.stalled else 0


async def _run_replay(settings, database, args, start, stop):
    from app.ops.replay import replay

    options = {name: value for name in ("batch_size", "connections") if (value := getattr(args, name)) is not None}
    return await _closing(database, replay(
        settings.kafka, args.topic or settings.command_topic, database, start, stop,
        progress=not args.no_progress, limits=settings.decode_limits, **options))


async def _closing(database, coroutine):
    try:
        return await coroutine
    finally:
        await database.close()


if __name__ == "__main__":
    sys.exit(main())
