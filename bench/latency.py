"""Latency statistics of an open-loop HTTP step, whichever client sent it (bench.http_load, bench.vegeta)."""

from __future__ import annotations

import statistics
from collections import Counter


def latency_stats(latencies: list[float]) -> dict:
    """p50, p99 and max in milliseconds (None without data)."""
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = sorted(x * 1000 for x in latencies)
    if len(ms) == 1:
        p50 = p99 = ms[0]
    else:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    return {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "max_ms": round(ms[-1], 2)}


def step_result(*, rate: float, duration: float, requests: int, sent_per_second: float | None,
                outcomes: Counter[str], by_status: dict[str, list[float]], send_lags: list[float],
                ok_status: int) -> dict:
    """One step's figures. `by_status`: latencies (from each request's due time) of the answered requests;
    `outcomes`: a count per status, and per error of the unanswered ones; `send_lags`: how late each was sent."""
    errors = {k: v for k, v in sorted(outcomes.items()) if k != str(ok_status)}
    return {
        "rate": rate,
        "duration_seconds": duration,
        "requests": requests,
        "sent_per_second": sent_per_second,
        "ok": outcomes[str(ok_status)],
        **latency_stats([x for latencies in by_status.values() for x in latencies]),
        "errors": errors,
        "error_count": sum(errors.values()),
        "client_send_lag_max_ms": round(max(send_lags, default=0.0) * 1000, 2),
        "latency_by_status": {k: {"count": len(v), **latency_stats(v)} for k, v in sorted(by_status.items())},
    }
