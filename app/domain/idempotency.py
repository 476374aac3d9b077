"""Idempotency keys: the same key always names the same command id.

The id is a UUIDv5 of the key, so every worker derives it without shared
state, before and after restarts; the keyed insert keeps one row however often
the command is published.
"""

from __future__ import annotations

import re
import uuid

HEADER = "Idempotency-Key"
MAX_LENGTH = 200
# A fixed namespace for this service's ids (uuid5 of the service name).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:timestamp-pipeline:idempotency-key")
_KEY = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_LENGTH)  # visible ASCII, no spaces


class InvalidIdempotencyKey(ValueError):
    """The header value cannot be used as an idempotency key."""


def command_id_for(key: str) -> uuid.UUID:
    """The command id an idempotency key stands for."""
    if not _KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1 to {MAX_LENGTH} visible ASCII characters (no spaces)"
        )
    return uuid.uuid5(NAMESPACE, key)
