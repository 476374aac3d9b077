"""The table store's disk fills up: the worker holds its batch, reports not ready, and loses nothing.

The worker's data dir (WORKER_DATA_DIR: the RocksDB table store) is a small
tmpfs of its own. Commands are produced until RocksDB refuses a write for want
of space; the space is then freed and every command must end up in
PostgreSQL once, in the table, and below the committed offsets.

Before the fix the store's "IO error: No space left on device" was taken for
a bad message: the batch was split and every command of it dead-lettered as a
processing_error and acknowledged, its row in PostgreSQL but not in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import offsets_without_rows, topic_end_offsets, wait_until, committed_offsets
from tests.integration.helpers import produce_commands, run_cli, served_from

TMPFS_BYTES = 24 * 1024 * 1024
LEFT_FREE_BYTES = 1024 * 1024  # what the filler leaves of the tmpfs once the worker's stores are open
ROUND = 400  # commands produced at a time
MOST_ROUNDS = 40  # 16,000 commands at most before the disk must be full


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of TMPFS_BYTES (root only), unmounted after the test."""
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(path: Path, leave: int) -> Path:
    """A file taking all but `leave` bytes of the file system."""
    filler = path / "filler"
    with open(filler, "wb") as out:
        while free_bytes(path) > leave:
            out.write(b"\0" * min(1024 * 1024, max(4096, free_bytes(path) - leave)))
            out.flush()
            os.fsync(out.fileno())
    return filler


async def gauge(http, worker, name: str) -> float:
    async with http.get(f"{worker.url}/metrics") as response:
        body = await response.text()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} missing from /metrics")


async def readiness(http, worker) -> tuple[int, dict]:
    async with http.get(f"{worker.url}/health/ready") as response:
        return response.status, await response.json()


async def test_a_full_table_disk_holds_the_batch_reports_not_ready_and_loses_nothing(
        small_disk, workers, namespace, producer, http):
    await namespace.create_topic()
    worker = await workers(data_dir=small_disk, TABLE_STORE="rocksdb://", TABLE_ROCKSDB_WRITE_BUFFER_MIB="1",
                           BATCH_SIZE="200").wait_ready(90)
    ids = []
    for partition in range(8):  # every partition's store is open and written before the disk is filled
        ids += await produce_commands(producer, namespace.topic, 5, partition)
    await namespace.wait_for_records(len(ids))
    filler = fill(small_disk, LEFT_FREE_BYTES)

    async def store_refused():
        status, body = await readiness(http, worker)
        return (status, body) if body["checks"]["table_store"]["status"] == "DOWN" else None

    refused = None
    for round_ in range(MOST_ROUNDS):
        for partition in range(8):
            ids += await produce_commands(producer, namespace.topic, ROUND // 8, partition)
        with contextlib.suppress(BaseException):
            refused = await wait_until(store_refused, 2, "", interval=0.5)
        if refused:
            break
    assert refused, f"the table store never filled its {TMPFS_BYTES} bytes ({len(ids)} commands); see {worker.log_path}"

    status, body = refused
    assert status == 503 and body["status"] == "DOWN"
    assert "disk full" in body["checks"]["table_store"]["error"]
    assert str(small_disk) in body["checks"]["table_store"]["error"]
    assert await gauge(http, worker, "timestamp_table_store_unwritable") == 1

    # Held, not crashed and not acknowledged: offsets stop below what has no row, for a while.
    ends = await topic_end_offsets(namespace.bootstrap_servers, namespace.topic)
    for _ in range(10):
        committed = await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic)
        assert offsets_without_rows(namespace, committed) == {}
        assert worker.process.poll() is None, worker.log()[-3000:]
        await asyncio.sleep(0.5)
    assert sum(committed.values()) < sum(ends.values()), "the worker went on committing with its store full"
    assert (await readiness(http, worker))[0] == 503

    filler.unlink()  # space back: RocksDB resumes by itself and the held batch is retried

    async def ready_again():
        status, _ = await readiness(http, worker)
        return status == 200 and await gauge(http, worker, "timestamp_table_store_unwritable") == 0

    await wait_until(ready_again, 90, "readiness UP and the gauge at 0 after the space was freed", interval=1)
    await namespace.wait_for_records(len(ids), timeout=120)

    async def all_committed():
        committed = await committed_offsets(namespace.bootstrap_servers, namespace.app_id, namespace.topic)
        return committed if all((committed.get(p) or 0) >= end for p, end in ends.items()) else None

    committed = await wait_until(all_committed, 120, "the offsets to reach the end of every partition")
    assert offsets_without_rows(namespace, committed) == {}
    assert namespace.query("SELECT count(*), count(DISTINCT id) FROM timestamp_records") == [(len(ids), len(ids))]
    assert namespace.query("SELECT status, count(*) FROM processed_events GROUP BY status") == [
        ("persisted", len(ids))]
    assert "processing_error" not in worker.log()

    assert await served_from(http, worker, ids) == {"table": len(ids)}

    audit = run_cli(namespace, "audit")
    assert "total: 0 messages missing" in audit.stdout, audit.stdout
    assert worker.terminate()[0] == 0
