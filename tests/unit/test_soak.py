"""The soak's pure parts (bench.soak): what its GETs read, how it judges a run, and how it counts CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.live_worker import CpuShare
from bench.soak import get_targets, growth_per_30_min, post_outcome, verdicts


def test_gets_alternate_workers_and_cycle_through_the_ids():
    targets = get_targets(["http://a:1", "http://b:2"], ["x", "y", "z"], 5)
    assert targets == ["GET http://a:1/api/v1/timestamp/x", "GET http://b:2/api/v1/timestamp/y",
                       "GET http://a:1/api/v1/timestamp/z", "GET http://b:2/api/v1/timestamp/x",
                       "GET http://a:1/api/v1/timestamp/y"]


def test_growth_is_the_slope_after_the_warm_up_per_30_minutes():
    # 100 MB a minute during the warm-up, then 1 MB every 3 minutes: 10 MB per 30 minutes.
    samples = [(m, 100.0 * m) for m in range(5)] + [(m, 500 + (m - 5) / 3) for m in range(5, 31)]
    assert growth_per_30_min(samples) == 10.0
    assert growth_per_30_min([(1, 1.0), (5, 9.0)]) is None  # one point after the warm-up


def _interval(minute: int, rss: float, store: float, post_p99: float) -> dict:
    worker = {"rss_mb": rss, "table_store_memory_mb": {"memtables": store / 2, "block_cache": store / 2}}
    return {"end_seconds": minute * 60, "post": {"p99_ms": post_p99}, "get": {"p99_ms": 5.0},
            "workers": {"worker-0": worker}}


def _audit(**figures: int) -> dict:
    return {"lost": 0, "unexpected": 0, "audit_gap_messages": 0, "posts_in_doubt": 0, "in_doubt_stored": 0,
            **figures}


def test_rss_that_is_the_stores_filling_is_told_apart_from_the_rest():
    # RSS grows 1 MB a minute, all of it RocksDB's stores filling up: the rest is flat.
    intervals = [_interval(m, 200.0 + m, 10.0 + m, 20.0) for m in range(1, 31)]
    judged = verdicts(intervals, _audit())
    assert judged["rss_growth_mb_per_30_min"] == {"worker-0": 30.0}
    assert judged["rss_within_limit"] is False
    assert judged["rss_less_table_store_growth_mb_per_30_min"] == {"worker-0": 0.0}
    assert judged["table_store_peak_mb"] == {"worker-0": 40.0}
    assert judged["p99_within_limit"] is True and judged["nothing_lost"] is True


def test_p99_that_doubles_late_in_the_run_misses_the_drift_limit():
    intervals = [_interval(m, 200.0, 10.0, 20.0 if m < 25 else 40.0) for m in range(1, 31)]
    judged = verdicts(intervals, _audit(lost=1))
    assert judged["p99_drift"]["post"]["ratio"] == 2.0
    assert judged["p99_within_limit"] is False
    assert judged["nothing_lost"] is False


def test_cpu_share_counts_the_process_and_the_machine():
    share = CpuShare(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # one core busy in this process
        pass
    cores = share.cores()
    assert 0.5 <= cores["worker"] <= 1.1
    assert cores["machine"] >= cores["worker"] - 0.05  # the machine's count includes this process
    assert abs(cores["rest"] - (cores["machine"] - cores["worker"])) <= 0.011
    assert 0 <= cores["loop_waited_for_cpu"] <= 1
    # The hypervisor's share is counted in the machine's (to a clock tick: 0.01 s of 0.3 here).
    assert 0 <= cores["stolen"] <= cores["machine"] + 0.05


def test_cpu_share_counts_the_loop_threads_wait_for_a_core():
    """This process and two busy ones on one core: each runs about a third of the time and waits the rest."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the busy processes inherit it
    spinners = []
    try:
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        time.sleep(0.2)  # past their start-up
        share = CpuShare(os.getpid())
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            pass
        assert share.cores()["loop_waited_for_cpu"] >= 0.3
    finally:
        os.sched_setaffinity(0, allowed)
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_a_post_is_in_doubt_unless_accepted_or_shed():
    assert post_outcome(200, b'{"id": "x"}') == "accepted"
    assert post_outcome(503, b'{"error": "overloaded", "message": "..."}') == "shed"  # never published
    assert post_outcome(503, b'{"error": "broker_unavailable"}') == "in_doubt"  # the broker may have it
    assert post_outcome(0, b"") == "in_doubt"  # no answer: a timeout or a dropped connection
    assert post_outcome(503, b"<html>proxy</html>") == "in_doubt"
    assert post_outcome(500, b'{"error": "overloaded"}') == "in_doubt"


def test_rows_of_posts_in_doubt_are_allowed_but_never_more_than_those_posts():
    intervals = [_interval(m, 200.0, 10.0, 20.0) for m in range(1, 31)]
    assert verdicts(intervals, _audit(posts_in_doubt=353, in_doubt_stored=353))["nothing_lost"] is True
    # More stored than were in doubt: some shed POST (503 overloaded) was published after all.
    assert verdicts(intervals, _audit(posts_in_doubt=3, in_doubt_stored=4))["nothing_lost"] is False
    assert verdicts(intervals, _audit(unexpected=1))["nothing_lost"] is False  # a row of a command never sent
