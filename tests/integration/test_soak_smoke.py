"""A 60-second run of `make soak` (python -m bench.soak): every sample and the audit. It asserts no speed or size.

The targets (RSS growth, p99 drift) are judged on the 30-minute run, in
docs/performance.md; here the same code path must sample both workers every
interval, lose nothing, and draw its plot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.worker_process import REPO

MINUTES, INTERVAL_SECONDS = 1, 10
SAMPLED = ("rss_mb", "open_fds", "asyncio_tasks", "event_loop_lag_seconds", "consumer_lag_messages")


@pytest.mark.timeout(400)
def test_soak_smoke_samples_every_interval_and_loses_nothing(tmp_path, bootstrap_servers, server_url):
    completed = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", str(MINUTES), "--interval", str(INTERVAL_SECONDS),
         "--post-rate", "50", "--get-rate", "50", "--produce-rate", "100", "--results-dir", str(tmp_path),
         "--workdir", str(tmp_path / "work"), "--plot"],
        cwd=REPO, env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers, "DATABASE_URL": server_url},
        capture_output=True, text=True, timeout=380,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    [result_path] = tmp_path.glob("soak-*.json")
    result = json.loads(result_path.read_text())

    assert result["parameters"]["http_client"] == "vegeta"  # the default: the load is not this Python process
    assert len(result["code"]["commit"]) == 40  # the commit measured
    assert set(result["host"]["speed"]) == {"python_loop_ns_per_iteration", "json_decode_us",
                                            "thread_round_trip_cpu_us"}  # the machine's speed, this run
    assert all(figure > 0 for figure in result["host"]["speed"].values())
    intervals = result["intervals"]
    assert len(intervals) == MINUTES * 60 // INTERVAL_SECONDS
    for interval in intervals:
        assert set(interval["workers"]) == {"worker-0", "worker-1"}
        assert set(interval["cpu_cores"]) == {"machine", "worker-0", "worker-1"}
        assert interval["cpu_cores"]["machine"] >= interval["cpu_cores"]["worker-0"] > 0
        for sample in interval["workers"].values():
            assert set(SAMPLED) <= set(sample)
            assert sample["rss_mb"] > 0 and sample["open_fds"] > 0 and sample["asyncio_tasks"] > 0
        for method in ("post", "get"):
            assert interval[method]["requests"] == 50 * INTERVAL_SECONDS
            assert interval[method]["p99_ms"] is not None
            assert interval[method]["client_send_lag_max_ms"] >= 0
    assert intervals[-1]["produced_total"] > 0
    for sample in intervals[-1]["workers"].values():  # the workers' RocksDB stores, read from their /metrics
        assert set(sample["table_store_memory_mb"]) == {"memtables", "block_cache", "table_readers"}
        assert sample["table_store_memory_mb"]["memtables"] > 0

    audit = result["audit"]
    assert audit["accepted_posts"] > 0 and audit["produced"] >= intervals[-1]["produced_total"]
    assert (audit["lost"], audit["unexpected"], audit["duplicated_rows"], audit["audit_gap_messages"]) == (0, 0, 0, 0)
    assert audit["in_doubt_stored"] <= audit["posts_in_doubt"]  # a POST shed with 503 overloaded is not stored
    assert audit["rows"] == audit["accepted_posts"] + audit["produced"] + audit["in_doubt_stored"]
    assert result["verdicts"]["nothing_lost"] is True
    assert result["verdicts"]["table_store_within_budget"] is True  # 8 stores of (2 x 4 + 8) MiB at most
    assert set(result["verdicts"]["rss_less_table_store_growth_mb_per_30_min"]) == {"worker-0", "worker-1"}
    assert result_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    work = tmp_path / "work"  # the workers' logs stay; their table stores (~300 MB each in a full run) do not
    assert sorted(p.name for p in work.iterdir()) == ["worker-0.log", "worker-1.log"]
