"""A small run of `make bench` (python -m bench): every section is measured. It asserts no speed.

3,000 events, two short HTTP rates and a 2,000-id recovery section: the same
code path as the full run, in about three minutes. The figures themselves are for docs/performance.md, never for
a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import report
from tests.worker_process import REPO

EVENTS = 3000
RATES = [50.0, 150.0]
RECOVERY_IDS = 2000


def positive(section: dict, *keys: str) -> None:
    for key in keys:
        value = section[key]
        assert isinstance(value, (int, float)) and value > 0, (key, section)


@pytest.mark.timeout(900)
def test_bench_smoke_measures_every_section(tmp_path, bootstrap_servers, server_url):
    rates = ",".join(f"{r:g}" for r in RATES)
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--events", str(EVENTS), "--post-rates", rates, "--get-rates", rates,
         "--http-duration", "2", "--get-background-rate", "100", "--recovery-ids", str(RECOVERY_IDS),
         "--results-dir", str(tmp_path)],
        cwd=REPO, env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers, "DATABASE_URL": server_url,
                       "KAFKA_SESSION_TIMEOUT_SECONDS": "6"},
        capture_output=True, text=True, timeout=850,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    [path] = tmp_path.glob("live-*.json")
    result = json.loads(path.read_text())

    assert result["parameters"]["events"] == EVENTS
    positive(result["preload"], "events", "seconds", "events_per_second")
    for ceiling in ("raw_consume", "raw_insert"):
        positive(result["ceilings"][ceiling], "events", "seconds", "events_per_second")
        assert result["ceilings"][ceiling]["events"] == EVENTS
    positive(result["bare_faust"], "events", "seconds", "events_per_second", "cpu_seconds", "cpu_us_per_event")
    assert [run["processes"] for run in result["workers"]] == [1, 2]
    for run in result["workers"]:
        positive(run, "events", "seconds", "events_per_second", "cpu_seconds", "cpu_us_per_event",
                 "ratio_to_bare_faust")
    positive(result["workers"][1], "ratio_to_one_worker")
    positive(result["replay"], "events", "seconds", "events_per_second", "rows_inserted")
    assert result["replay"]["rows_inserted"] == EVENTS
    positive(result["record_reader"], "records", "aiokafka_us_per_record", "worker_reader_us_per_record",
             "fallback_us_per_record")
    assert result["record_reader"]["records"] == EVENTS

    http = result["http"]
    assert http["client"] == result["parameters"]["http_client"] == "vegeta"  # the default load generator
    for method in ("post", "get"):
        assert [step["rate"] for step in http[method]] == RATES
        for step in http[method]:
            positive(step, "requests", "ok", "p50_ms", "p99_ms", "max_ms", "sent_per_second")
            assert step["error_count"] == sum(step["errors"].values())
            positive(step["cpu_cores"], "worker", "machine")  # what the worker and the machine used meanwhile
            assert 0 <= step["cpu_cores"]["loop_waited_for_cpu"] < 1 and 0 <= step["cpu_cores"]["stolen"] < 2
        assert set(http["max_rate_p99_under_50ms"]) == {"post", "get"}
    for step in http["post"]:
        assert step["accepted_not_persisted"] == 0, step  # no accepted command lost
    assert all(step["background_events"] > 0 for step in http["get"])
    # The floor: the same POST and GET steps against bench/bare_faust.py, and the worker's cores over its.
    for method in ("post", "get"):
        assert [step["rate"] for step in http[f"floor_{method}"]] == RATES
        for step in http[f"floor_{method}"]:
            positive(step, "ok", "p50_ms", "p99_ms")
            assert 0 <= step["cpu_cores"]["loop_waited_for_cpu"] < 1 and 0 <= step["cpu_cores"]["stolen"] < 2
            assert step["error_count"] == 0, step
            assert "shed_by_server" not in step and "accepted_not_persisted" not in step  # the floor has neither
        assert [row["rate"] for row in http[f"{method}_cores_vs_floor"]] == RATES
        for row, step, floor in zip(http[f"{method}_cores_vs_floor"], http[method], http[f"floor_{method}"]):
            assert (row["worker_cores"], row["floor_cores"]) == (step["cpu_cores"]["worker"],
                                                                 floor["cpu_cores"]["worker"])
            # a few hundred requests in 2 s can round to 0.00 cores on the floor: no ratio then
            assert row["ratio"] == (round(row["worker_cores"] / row["floor_cores"], 2) if row["floor_cores"] else None)
    assert all(step["background_events"] > 0 for step in http["floor_get"])
    assert report.FLOOR_TITLES["post"] in completed.stdout and report.FLOOR_TITLES["get"] in completed.stdout

    recovery = result["recovery"]
    assert [(run["history"], run["shape"]) for run in recovery["runs"]] == [
        (RECOVERY_IDS, "full"), (RECOVERY_IDS, "window"), (RECOVERY_IDS, "window_only")]
    kept = int(RECOVERY_IDS * recovery["window_fraction"])
    full, window, window_only = recovery["runs"]
    assert full["fresh"]["records_read"] == RECOVERY_IDS  # a fresh worker reads the whole changelog
    assert window_only["fresh"]["records_read"] == kept
    # Compacted before it was measured, so recovery read the window, not the history.
    assert window["changelog"]["values"] <= kept * 1.05
    assert window["fresh"]["records_read"] <= window["changelog"]["values"] + window["changelog"]["tombstones"]
    assert window["fresh"]["records_read"] < RECOVERY_IDS / 2
    for run in recovery["runs"]:
        positive(run["fresh"], "seconds_to_ready", "records_read_per_second")
        positive(run["restart"], "seconds_to_ready")
        assert run["restart"]["records_read"] == 0  # its volume held everything
        positive(run["scale_out"], "seconds_to_ready")
        assert run["scale_out"]["running_worker_gets"]["errors"] == {}
        positive(run["standby_takeover"], "seconds_to_keys_served_from_table",
                 "seconds_to_ready_with_all_partitions")
    assert window["expired_get"]["served_from"] == {"database": window["expired_get"]["requests"]}
    assert set(recovery["window_ratio"]) == {str(RECOVERY_IDS)}
    assert "Table recovery" in completed.stdout

    assert "bare Faust agent" in completed.stdout and str(path) in completed.stdout
    assert "record reader, CPU µs per record" in completed.stdout
    positive(result["host"]["speed"], *result["host"]["speed"])  # how fast the machine ran Python, this run
    assert "machine speed (CPU time, lower is faster)" in completed.stdout
    assert "| project worker ×2" in report.markdown(result)
