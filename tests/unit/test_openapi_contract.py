"""web/openapi.json declares exactly what the server validates: same accepted, same refused."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from app.domain.correlation import InvalidCorrelationId, validate_correlation_id
from app.domain.idempotency import InvalidIdempotencyKey, command_id_for
from app.domain.rfc3339 import InvalidTimestamp, parse_rfc3339

DOCUMENT = json.loads((Path(__file__).resolve().parents[2] / "web" / "openapi.json").read_text())
COMPONENTS = DOCUMENT["components"]
SOME = str(uuid.uuid4())


def accepts(validate, value: str, error: type[Exception]) -> bool:
    try:
        validate(value)
    except error:
        return False
    return True


def schema_accepts(schema: dict, value: str) -> bool:
    pattern = schema["pattern"]
    # Anchored at both ends; ECMA's `$`, unlike Python's, does not match before a final newline.
    assert pattern.startswith("^") and pattern.endswith("$")
    within = schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
    return within and re.fullmatch(pattern[1:-1], value) is not None


@pytest.mark.parametrize("value", [
    SOME, SOME.upper(), f"ING:{SOME}", f"a:{SOME}", f"A{'b' * 15}:{SOME}", f"A{'b' * 16}:{SOME}", f"1A:{SOME}",
    f":{SOME}", f"I-N_G:{SOME}", f"ING:{SOME}x", SOME.replace("-", ""), f"{{{SOME}}}", f"ING::{SOME}", "", "ING:",
    f"ING {SOME}", f"ING:{SOME[:-1]}", f"ING:{SOME}\n",
])
def test_correlation_id(value):
    schema = COMPONENTS["schemas"]["CorrelationId"]
    assert schema_accepts(schema, value) == accepts(validate_correlation_id, value, InvalidCorrelationId)


def test_every_correlation_header_and_the_query_use_the_correlation_id_schema():
    parameters = COMPONENTS["parameters"]
    for name in ("X-Correlation-ID", "correlationId", "X-Request-ID"):
        assert parameters[name]["name"] == name and parameters[name]["in"] == "header"
        assert parameters[name]["schema"] == {"$ref": "#/components/schemas/CorrelationId"}
    [query] = [p for p in DOCUMENT["paths"]["/api/v1/events"]["get"]["parameters"] if p.get("in") == "query"]
    assert query["name"] == "correlation_id" and query["required"] is True
    assert query["schema"] == {"$ref": "#/components/schemas/CorrelationId"}  # so an empty value is invalid


@pytest.mark.parametrize("value", ["k", "x" * 200, "x" * 201, "", "a b", "ä", "\t", "!~", "key-1:2/3"])
def test_idempotency_key(value):
    schema = COMPONENTS["parameters"]["Idempotency-Key"]["schema"]
    assert schema_accepts(schema, value) == accepts(command_id_for, value, InvalidIdempotencyKey)


@pytest.mark.parametrize("value", [
    "2009-09-28T19:03:12Z", "2009-09-28t21:03:12+02:00", "2009-09-28T19:03:12.123456789z",
    "2009-09-28T19:03:12.1234567890Z", "2009-09-28T19:03:60Z", "2009-09-28T24:00:00Z", "2009-09-28T19:03:12+24:00",
    "2009-09-28T19:03:12-00:60", "2009-09-28T19:03:12", "2009-09-28 19:03:12Z", "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "٢٠٠٩-09-28T19:03:12Z", "2009-9-28T19:03:12Z",
])
def test_timestamp(value):
    schema = COMPONENTS["parameters"]["timestamp"]["schema"]
    assert schema_accepts(schema, value) == accepts(parse_rfc3339, value, InvalidTimestamp)


def test_timestamp_calendar():
    """Month lengths and leap years (every day of years around the 100/400 rules)."""
    schema = COMPONENTS["parameters"]["timestamp"]["schema"]
    for year in [1, 4, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 9996, 9999]:
        for month in range(1, 13):
            for day in range(1, 32):
                value = f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z"
                assert schema_accepts(schema, value) == accepts(parse_rfc3339, value, InvalidTimestamp), value


@pytest.mark.parametrize("value", [SOME, SOME.upper(), SOME.replace("-", ""), f"{{{SOME}}}", "x", ""])
def test_command_id_pattern_is_the_canonical_uuid(value):
    schema = COMPONENTS["parameters"]["commandId"]["schema"]
    assert schema_accepts(schema, value) == (value.lower() == SOME)
