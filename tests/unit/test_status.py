"""One list of message statuses: the Status enum, the database's CHECK, the metric's label values."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

from app.adapters.database import MIGRATIONS_DIR
from app.domain.records import Status


def latest_status_check() -> set[str]:
    """The values the newest migration that constrains processed_events.status allows."""
    migrations = sorted(p for p in Path(MIGRATIONS_DIR).glob("*.sql") if not p.name.endswith(".rollback.sql"))
    checks = [m.group(1) for path in migrations
              for m in re.finditer(r"CHECK \(status IN \(([^)]*)\)\)", path.read_text())]
    return set(re.findall(r"'([a-z_]+)'", checks[-1]))


def test_the_database_allows_exactly_the_statuses_of_the_code():
    assert latest_status_check() == {status.value for status in Status}


def test_every_status_is_an_outcome_label_present_from_the_start():
    outcomes = {sample.labels["outcome"] for metric in REGISTRY.collect()
                if metric.name == "timestamp_events_processed" for sample in metric.samples}
    assert outcomes == {status.value for status in Status}
