"""Fakes and helpers shared by the unit tests."""

from __future__ import annotations

import psycopg2

from app.domain.rfc3339 import utc_now


class FakeDatabase:
    def __init__(self, refuse: set = frozenset(), outages: int = 0) -> None:
        self.refuse = set(refuse)
        self.outages = outages
        self.records: dict = {}
        self.events: dict = {}
        self.writes = 0

    async def persist_batch(self, plan):
        while self.outages:  # transient errors are retried by the sink (test_circuit_breaker.py)
            self.outages -= 1
        self.writes += 1
        if any(r.id in self.refuse for r in plan.records):
            raise psycopg2.errors.DataError("value out of range")
        inserted = {r.id: utc_now() for r in plan.records if r.id not in self.records}
        self.records.update({r.id: r for r in plan.records if r.id in inserted})
        for event in plan.processed_events(set(inserted)):
            self.events.setdefault(event.source, event)
        return inserted


def copy_fields(line: str) -> list[str | None]:
    """One COPY text-format line back into its fields (None for \\N), unescaped."""
    fields = []
    for raw in line.split("\t"):
        if raw == "\\N":
            fields.append(None)
            continue
        text, i = [], 0
        while i < len(raw):
            if raw[i] == "\\":
                text.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[raw[i + 1]])
                i += 2
            else:
                text.append(raw[i])
                i += 1
        fields.append("".join(text))
    return fields
