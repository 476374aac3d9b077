"""Migrations: versioned, idempotent, safe when several workers start at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from app.database import apply_migrations


def test_concurrent_migrations_apply_each_version_once(namespace):
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(apply_migrations, [namespace.database_url] * 4))
    assert sorted(map(len, results)) == [0, 0, 0, 1]  # exactly one process applied 0001
    assert namespace.query("SELECT migration_id FROM _yoyo_migration") == [("0001_initial",)]
    tables = namespace.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "AND table_name IN ('timestamp_records', 'processed_events') ORDER BY 1"
    )
    assert tables == [("processed_events",), ("timestamp_records",)]
    assert apply_migrations(namespace.database_url) == []
