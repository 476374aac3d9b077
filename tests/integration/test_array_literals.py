"""The array literals the batch insert sends (`Table.array_parameters`) read back in PostgreSQL as the values sent."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from app.adapters.schema import _LITERALS

TIMES = [
    datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=timezone.utc),
    datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc),  # no fraction
    datetime(1, 1, 1, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 11, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-12))),
    datetime(2024, 2, 29, 13, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    None,
]


def test_uuids_times_and_integers_with_nulls_round_trip(namespace):
    ids = [uuid.uuid4() for _ in range(3)] + [None, uuid.UUID(int=0)]
    integers = [0, -1, 2**63 - 1, None, -(2**63)]
    (back,) = namespace.query(
        "SELECT %(ids)s::uuid[]::text[], %(times)s::timestamptz[], %(integers)s::bigint[], %(small)s::integer[]",
        {"ids": _LITERALS["uuid"](ids), "times": _LITERALS["timestamptz"](TIMES),
         "integers": _LITERALS["bigint"](integers), "small": _LITERALS["integer"]([7, None, 2**31 - 1])})
    assert back[0] == [None if i is None else str(i) for i in ids]
    assert back[1] == TIMES
    assert back[2] == integers
    assert back[3] == [7, None, 2**31 - 1]


def test_an_empty_batch_is_an_empty_array(namespace):
    assert namespace.query("SELECT cardinality(%(a)s::uuid[])", {"a": _LITERALS["uuid"]([])}) == [(0,)]
