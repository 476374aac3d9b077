"""TableExpiry.sweep and the TABLE_RETENTION setting, with an in-memory database and changelog."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from app.settings import Settings, SettingsError
from app.adapters.kafka_partitioner import key_partition
from tables.table_expiry import NEVER, TableExpiry, changelog_topic_config, expired

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
PARTITIONS = 4


class Rows:
    """timestamp_records (id, created_at) and table_expiry_cursors, as the SQL of Database reads them."""

    def __init__(self, rows):
        self.rows = sorted(rows, key=lambda r: (r[1], r[0]))
        self.cursors: dict[int, datetime] = {}
        self.queries = 0

    async def expired_ids(self, after, retention_seconds, limit):
        self.queries += 1
        boundary = NOW - timedelta(seconds=retention_seconds)
        found = [r for r in self.rows if (r[1], r[0]) > after and r[1] < boundary][:limit]
        return found, boundary

    async def expiry_cursors(self, partitions):
        return {p: c for p, c in self.cursors.items() if p in partitions}

    async def save_expiry_cursors(self, cursors):
        for p, c in cursors.items():
            self.cursors[p] = max(self.cursors.get(p, NEVER), c)


class Changelog:
    def __init__(self):
        self.written = []

    async def put_many(self, items):
        self.written.extend(items)


def ids_in(partition: int, count: int) -> list[uuid.UUID]:
    found = []
    while len(found) < count:
        candidate = uuid.uuid4()
        if key_partition(str(candidate).encode(), PARTITIONS) == partition:
            found.append(candidate)
    return found


async def test_a_sweep_tombstones_only_expired_ids_of_owned_partitions_that_the_store_holds():
    mine_old, mine_new, theirs_old = ids_in(0, 3), ids_in(1, 2), ids_in(2, 2)
    not_held = ids_in(0, 1)
    rows = Rows([(i, NOW - timedelta(hours=2)) for i in mine_old + theirs_old + not_held]
                + [(i, NOW - timedelta(minutes=5)) for i in mine_new])
    held = {str(i).encode() for i in mine_old + mine_new + theirs_old}
    changelog = Changelog()
    expiry = TableExpiry(rows, changelog, held.__contains__, 3600, PARTITIONS, lambda: {0, 1})
    assert await expiry.sweep(page=2) == 3
    assert sorted(changelog.written) == sorted((str(i).encode(), None) for i in mine_old)
    assert rows.cursors == {0: NOW - timedelta(hours=1), 1: NOW - timedelta(hours=1)}
    assert await expiry.sweep() == 0  # resumes at the cursor: nothing again
    assert len(changelog.written) == 3


async def test_a_new_owner_resumes_at_the_partitions_cursor():
    old, older = ids_in(0, 1), ids_in(0, 1)
    rows = Rows([(older[0], NOW - timedelta(days=3)), (old[0], NOW - timedelta(hours=2))])
    rows.cursors = {0: NOW - timedelta(days=2)}  # the last owner got this far
    changelog = Changelog()
    expiry = TableExpiry(rows, changelog, lambda key: True, 3600, PARTITIONS, lambda: {0})
    await expiry.sweep()
    assert changelog.written == [(str(old[0]).encode(), None)]


async def test_nothing_owned_nothing_read():
    rows = Rows([])
    assert await TableExpiry(rows, Changelog(), lambda key: True, 60, PARTITIONS, set).sweep() == 0
    assert rows.queries == 0


def test_expired_follows_the_window():
    assert expired(NOW - timedelta(seconds=61), 60, NOW)
    assert not expired(NOW - timedelta(seconds=59), 60, NOW)
    assert not expired(NOW - timedelta(days=999), None, NOW)  # forever


def test_the_changelog_can_compact_tombstones_soon():
    config = changelog_topic_config(60_000, 5_000)
    assert config == {"segment.ms": "60000", "delete.retention.ms": "5000", "min.compaction.lag.ms": "0",
                      "min.cleanable.dirty.ratio": "0.1"}


@pytest.mark.parametrize("text, seconds", [("forever", None), ("0", None), ("7d", 7 * 86400), ("12h", 43200),
                                           ("30m", 1800), ("45s", 45), ("90", 90), ("1.5h", 5400)])
def test_table_retention_reads_durations(text, seconds):
    assert Settings.from_env({"TABLE_RETENTION": text}).table_retention == seconds


@pytest.mark.parametrize("text", ["-1d", "week", "7w", ""])
def test_a_bad_table_retention_names_the_variable(text):
    with pytest.raises(SettingsError, match="TABLE_RETENTION"):
        Settings.from_env({"TABLE_RETENTION": text})
