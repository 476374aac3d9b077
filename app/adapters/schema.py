"""The columns of `timestamp_records` and `processed_events`, spelled out once.

The migrations (app/migrations/) create the tables; this module says, per
column, its name, its PostgreSQL type and where its value lives in the
dataclass of a row (`TimestampRecord`, `ProcessedEvent`). The statements'
column lists, the casts of their unnest() arrays, the bulk load's staging
columns and the mapping of a selected row back to its dataclass are generated
from it, so a column is added in one place (and in a migration).

Only identifiers from this module are put into SQL text; values are always
parameters.
"""

from __future__ import annotations

import operator
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import msgspec

from app.domain.records import ProcessedEvent, TimestampRecord


def quoted(name: str) -> str:
    """A column name as an SQL identifier (`"offset"` needs the quotes; the others take them)."""
    return '"' + name.replace('"', '""') + '"'


def column_list(columns: Iterable[Column], alias: str | None = None, **instead: str) -> str:
    """`"id", "event_timestamp", ...`, each qualified by `alias` when given; `instead` gives some columns' SQL."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(instead.get(c.name) or prefix + c.sql for c in columns)


@dataclass(frozen=True)
class Column:
    """One column of a table, and where its value lives in the row's dataclass."""

    name: str
    sql_type: str  # as in the migration: the cast of the unnest() array of its values
    attribute: str  # dotted path into the dataclass: "id", "source.topic"
    written: bool = True  # False: PostgreSQL sets it on insert (a DEFAULT)
    of_record: str | None = None  # processed_events only: the timestamp_records column a record's row copies
    get: Callable[[Any], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "get", operator.attrgetter(self.attribute))

    @property
    def sql(self) -> str:
        return quoted(self.name)


class Table:
    """A table's columns, in the order of the migration, and the SQL fragments made from them."""

    def __init__(self, name: str, row_type: type, columns: Sequence[Column]) -> None:
        self.name = name
        self.columns = tuple(columns)
        self.written = tuple(c for c in self.columns if c.written)
        self._by_name = {c.name: c for c in self.columns}
        self._builder = _builder(row_type, self.columns)

    def __getitem__(self, name: str) -> Column:
        return self._by_name[name]

    @property
    def select_list(self) -> str:
        """Every column, in order: what `from_row` reads."""
        return column_list(self.columns)

    @property
    def insert_list(self) -> str:
        """The written columns, in order: what `unnest()` gives."""
        return column_list(self.written)

    def unnest(self, prefix: str = "") -> str:
        """`unnest(%(id)s::uuid[], ...)`: one array parameter per written column, named `prefix` + column."""
        arrays = ", ".join(f"%({prefix}{c.name})s::{c.sql_type}[]" for c in self.written)
        return f"unnest({arrays})"

    def arrays(self, rows: Sequence, prefix: str = "") -> dict[str, list]:
        """The parameters of `unnest(prefix)`: per written column, its values over `rows`."""
        return {prefix + c.name: list(map(c.get, rows)) for c in self.written}

    def array_parameters(self, rows: Sequence, prefix: str = "") -> dict[str, str | list]:
        """`arrays`, each uuid, timestamp or integer column as one array literal (`{"v1","v2",null}`).

        psycopg2 adapts a list element by element (a UUID in Python, a datetime
        as a `'...'::timestamptz` of its own): about 2 µs per value here. One
        literal string is the same parameter; msgspec writes it in C (a JSON
        array is an array literal once its brackets are braces: PostgreSQL takes
        quoted elements and a `null` in any case). Text columns stay lists
        (psycopg2 quotes them).
        """
        return {prefix + c.name: _LITERALS.get(c.sql_type, list)(map(c.get, rows)) for c in self.written}

    def from_row(self, row: Sequence):
        """The dataclass of a row selected as `select_list`."""
        return self._builder(row)


_json_encode = msgspec.json.Encoder().encode


def _array_literal(values: Iterable) -> str:
    """A PostgreSQL array literal of UUIDs, aware datetimes or integers (None is NULL).

    Their JSON forms hold no backslash or quote inside a string: a UUID's hex,
    an RFC 3339 time (UTC as `Z`), a number.
    """
    return "{" + _json_encode(list(values))[1:-1].decode() + "}"


_LITERALS: dict[str, Callable[[Iterable], str]] = {
    "uuid": _array_literal, "timestamptz": _array_literal, "integer": _array_literal, "bigint": _array_literal,
}


def _builder(row_type: type, columns: Sequence[Column]) -> Callable[[Sequence], Any]:
    """A function from a row of `columns` to `row_type`; "a.b" attributes build the field `a`'s dataclass."""
    hints = typing.get_type_hints(row_type)
    flat: list[tuple[int, str]] = []
    nested: dict[str, list[tuple[int, str]]] = {}
    for i, column in enumerate(columns):
        outer, _, inner = column.attribute.partition(".")
        if inner:
            nested.setdefault(outer, []).append((i, inner))
        else:
            flat.append((i, outer))
    parts = [(outer, hints[outer], fields) for outer, fields in nested.items()]

    def build(row: Sequence):
        values = {name: row[i] for i, name in flat}
        for outer, type_, fields in parts:
            values[outer] = type_(**{name: row[i] for i, name in fields})
        return row_type(**values)

    return build


RECORDS = Table("timestamp_records", TimestampRecord, (
    Column("id", "uuid", "id"),
    Column("event_timestamp", "timestamptz", "event_timestamp"),
    Column("created_at", "timestamptz", "created_at", written=False),
    Column("received_at", "timestamptz", "received_at"),
    Column("processed_at", "timestamptz", "processed_at"),
    Column("correlation_id", "text", "correlation_id"),
    Column("source_topic", "text", "source.topic"),
    Column("source_partition", "integer", "source.partition"),
    Column("source_offset", "bigint", "source.offset"),
))

# A stored record's processed_events row copies the record's columns named by
# `of_record`; its status is the insert's outcome and it has no error.
EVENTS = Table("processed_events", ProcessedEvent, (
    Column("topic", "text", "source.topic", of_record="source_topic"),
    Column("partition", "integer", "source.partition", of_record="source_partition"),
    Column("offset", "bigint", "source.offset", of_record="source_offset"),
    Column("event_id", "uuid", "event_id", of_record="id"),
    Column("correlation_id", "text", "correlation_id", of_record="correlation_id"),
    Column("status", "text", "status"),
    Column("error", "text", "error"),
    Column("processed_at", "timestamptz", "processed_at", of_record="processed_at"),
))


def event_of_record(alias: str, status: str) -> str:
    """The select list of a record's processed_events row (as EVENTS.insert_list), from `alias`, a RECORDS row.

    `status` is the SQL of its status; the columns no record column fills are NULL.
    """
    return ", ".join(f"{alias}.{quoted(c.of_record)}" if c.of_record else status if c.name == "status" else "NULL"
                     for c in EVENTS.written)


# The written RECORDS columns no processed_events column copies (event_timestamp, received_at).
RECORD_ONLY = tuple(c for c in RECORDS.written if c.name not in {e.of_record for e in EVENTS.columns})
