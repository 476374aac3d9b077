"""Secondary indexes of the replay's target tables, dropped before a load into empty tables and built after it.

Into empty tables, maintaining the secondary indexes row by row costs more
than building them once at the end. Only plain btree indexes on columns are
deferred, and only when their definition is exactly what CREATE INDEX on
those columns gives back (checked against pg_get_indexdef), so rebuilding
them from identifiers recreates them as the migrations made them. Which ones
are deferred is kept in a table in the same transaction that drops them: a
replay that dies leaves them listed, and the next replay rebuilds them.
"""

from __future__ import annotations

import logging

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from app.adapters.schema import EVENTS, RECORDS

log = logging.getLogger(__name__)

DEFERRED_INDEXES = "replay_deferred_indexes"
TARGET_TABLES = (RECORDS.name, EVENTS.name)
_LOCK_KEY = 0x7265706C6179  # pg_advisory_xact_lock key: 'replay'; deferring and rebuilding never overlap

_DEFERRABLE = """
    SELECT n.nspname, t.relname, c.relname, array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_am am ON am.oid = c.relam
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
    WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
      AND i.indexprs IS NULL AND i.indpred IS NULL AND am.amname = 'btree'
      AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = i.indexrelid)
    GROUP BY n.nspname, t.relname, c.relname, i.indexrelid
    HAVING pg_get_indexdef(i.indexrelid) = format('CREATE INDEX %%I ON %%I.%%I USING btree (%%s)', c.relname,
                                                  n.nspname, t.relname,
                                                  string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord))
    ORDER BY 1, 2, 3
"""


def _create_index(schema: str, table: str, name: str, columns: list[str]) -> sql.Composed:
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} USING btree ({})").format(
        sql.Identifier(name), sql.Identifier(schema), sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)))


def defer_secondary_indexes(url: str, lock_timeout_ms: int = 5000) -> list[str]:
    """When both target tables are empty, drop their deferrable secondary indexes (listing them); their names.

    Nothing is deferred when a table has rows, or when the tables stay locked
    by others for `lock_timeout_ms` (live workers keep their indexes then).
    """
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cur.execute("SET LOCAL lock_timeout = %s", (f"{lock_timeout_ms}ms",))
            try:
                cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(map(sql.Identifier, TARGET_TABLES))))
            except psycopg2.errors.LockNotAvailable:
                log.info("Target tables busy; secondary indexes are maintained during the load")
                return []
            cur.execute(sql.SQL("SELECT {}").format(sql.SQL(" OR ").join(
                sql.SQL("EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)) for table in TARGET_TABLES)))
            if cur.fetchone()[0]:  # not empty: the indexes stay, whoever else reads the tables needs them
                return []
            cur.execute(_DEFERRABLE, (list(TARGET_TABLES),))
            indexes = cur.fetchall()
            if not indexes:
                return []
            cur.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (schema_name text NOT NULL, table_name text NOT NULL,"
                " index_name text NOT NULL, columns text[] NOT NULL, PRIMARY KEY (schema_name, index_name))"
            ).format(sql.Identifier(DEFERRED_INDEXES)))
            for schema, table, name, columns in indexes:
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
                    sql.Identifier(DEFERRED_INDEXES)), (schema, table, name, columns))
                cur.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        return [name for _, _, name, _ in indexes]
    finally:
        conn.close()


def rebuild_deferred_indexes(url: str) -> list[str]:
    """Create every index a replay deferred (this one or an interrupted one) and forget the list; their names."""
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (DEFERRED_INDEXES,))
            if not cur.fetchone()[0]:
                return []
            cur.execute(sql.SQL("SELECT schema_name, table_name, index_name, columns FROM {} ORDER BY 1, 2, 3")
                        .format(sql.Identifier(DEFERRED_INDEXES)))
            indexes = cur.fetchall()
            for schema, table, name, columns in indexes:
                cur.execute(_create_index(schema, table, name, columns))
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(DEFERRED_INDEXES)))
        return [name for _, _, name, _ in indexes]
    finally:
        conn.close()
