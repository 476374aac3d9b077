"""Migrations: versioned, idempotent, safe when several workers start at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from app.adapters.database import MIGRATIONS_DIR, apply_migrations

VERSIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.sql") if not path.stem.endswith(".rollback"))


def test_concurrent_migrations_apply_each_version_once(namespace):
    assert VERSIONS[:2] == ["0001_initial", "0002_failed_status"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(apply_migrations, [namespace.database_url] * 4))
    assert sorted(map(len, results)) == [0, 0, 0, len(VERSIONS)]  # exactly one process applied them
    assert namespace.query("SELECT migration_id FROM _yoyo_migration ORDER BY 1") == [(v,) for v in VERSIONS]
    tables = namespace.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name IN ('timestamp_records', 'processed_events') ORDER BY 1"
    )
    assert tables == [("processed_events",), ("timestamp_records",)]
    assert apply_migrations(namespace.database_url) == []


def test_processed_events_accepts_the_failed_status_and_nothing_unknown(namespace):
    apply_migrations(namespace.database_url)
    insert = ("INSERT INTO processed_events (topic, partition, \"offset\", status, processed_at) "
              "VALUES ('t', 0, %s, %s, now()) RETURNING status")
    assert namespace.query(insert, (1, "failed")) == [("failed",)]
    with pytest.raises(psycopg2.errors.CheckViolation):
        namespace.query(insert, (2, "lost"))


def test_the_column_spec_is_what_the_migrations_create(namespace):
    from app.adapters.schema import EVENTS, RECORDS

    apply_migrations(namespace.database_url)
    for table in (RECORDS, EVENTS):
        columns = namespace.query(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns"
            " JOIN pg_attribute ON attrelid = %s::regclass AND attname = column_name"
            " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
            (table.name, table.name))
        aliases = {"timestamp with time zone": "timestamptz"}
        assert [(name, aliases.get(type_, type_)) for name, type_ in columns] == [
            (c.name, c.sql_type) for c in table.columns]
