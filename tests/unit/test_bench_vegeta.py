"""bench.vegeta's reading of Vegeta's results: latency from each request's due time, as bench.http_load counts it."""

from __future__ import annotations

import base64

import pytest

from bench.vegeta import body_of, sent_at, step_statistics


def result(seq: int, sent: str, latency_ms: float, code: int = 200, error: str = "", body: bytes = b"") -> dict:
    return {"seq": seq, "timestamp": sent, "latency": int(latency_ms * 1_000_000), "code": code, "error": error,
            "body": base64.b64encode(body).decode()}


def test_timestamps_with_nanoseconds_and_offsets():
    assert sent_at("2026-12-05T23:00:00.123456789Z") == pytest.approx(sent_at("2026-12-05T23:00:00.123456Z"))
    assert sent_at("2026-12-06T00:00:01+01:00") - sent_at("2026-12-05T23:00:00Z") == pytest.approx(1.0)


def test_a_request_sent_late_counts_its_lateness():
    # 10/s: request 1 is due at .1 s but went at .3 s (the client fell behind), answered in 5 ms.
    results = [result(0, "2026-12-05T23:00:00.000Z", 2), result(1, "2026-12-05T23:00:00.300Z", 5),
               result(2, "2026-12-05T23:00:00.200Z", 1)]
    step = step_statistics(results, rate=10, duration=0.3, ok_status=200)

    assert step["requests"] == 3 and step["ok"] == 3 and step["error_count"] == 0
    assert step["max_ms"] == pytest.approx(205, abs=0.01)  # 200 ms late + 5 ms
    assert step["client_send_lag_max_ms"] == pytest.approx(200, abs=0.01)
    assert step["p50_ms"] == pytest.approx(2, abs=0.01)


def test_unanswered_and_refused_requests_are_errors():
    results = [result(0, "2026-12-05T23:00:00Z", 1), result(1, "2026-12-05T23:00:00.1Z", 5000, code=0,
                                                             error="Get ...: context deadline exceeded (Client.Timeout"
                                                                   " exceeded while awaiting headers)"),
               result(2, "2026-12-05T23:00:00.2Z", 3, code=503), result(3, "2026-12-05T23:00:00.3Z", 1, code=0,
                                                                       error="connection refused")]
    step = step_statistics(results, rate=10, duration=0.4, ok_status=200)

    assert step["ok"] == 1
    assert step["errors"] == {"503": 1, "ClientError": 1, "timeout": 1}
    assert set(step["latency_by_status"]) == {"200", "503"}  # an unanswered request has no latency


def test_bodies_are_read_back():
    assert body_of(result(0, "2026-12-05T23:00:00Z", 1, body=b'{"id": "x"}')) == b'{"id": "x"}'
