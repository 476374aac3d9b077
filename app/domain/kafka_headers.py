"""Kafka header names that are not UTF-8 (pure functions).

Header names are bytes on the wire; the consumer's record reader
(`app.faust_compat.kafka_record_reader`) keeps one that is not UTF-8 as a
``str`` holding its bytes (``surrogateescape``), so it reaches the agent, which
dead-letters the record as ``undecodable_record``.
"""

from __future__ import annotations

import base64
import json

UNDECODABLE_RECORD = "undecodable_record"


def header_name_bytes(name: str | bytes) -> bytes:
    """A header name as it was on the wire."""
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def undecodable_header_names(headers) -> list[bytes]:
    """The names, as bytes, of the headers whose name is not UTF-8."""
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    bad = []
    for name, _ in pairs:
        if isinstance(name, str) and name.isascii():
            continue  # the common case
        raw = header_name_bytes(name)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(raw)
    return bad


def encode_headers(headers) -> bytes:
    """Headers, byte for byte, as one JSON value: ``[[name_base64, value_base64 | null], ...]``.

    Kafka clients only write header names that are UTF-8 text (aiokafka's and
    Java's producers take a string), so a dead letter carries the original
    headers of an undecodable record in one header of this form instead.
    """
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    return json.dumps([
        [base64.b64encode(header_name_bytes(name)).decode(), None if value is None else base64.b64encode(value).decode()]
        for name, value in pairs
    ], separators=(",", ":")).encode()


def decode_headers(data: bytes) -> list[tuple[bytes, bytes | None]]:
    """The headers `encode_headers` wrote."""
    return [(base64.b64decode(name), None if value is None else base64.b64decode(value))
            for name, value in json.loads(data)]
