"""The event-loop lag probe reports the longest delay of its window, and sees a loop held by blocking code."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge

from app.observability.metrics import LoopLagProbe


def _gauge() -> Gauge:
    return Gauge("lag_seconds", "test", registry=CollectorRegistry())


def test_the_gauge_holds_the_longest_delay_of_the_window():
    gauge = _gauge()
    probe = LoopLagProbe(gauge, interval_seconds=1.0, window_seconds=3.0)
    for delay in (0.01, 0.5, 0.02):
        probe.observe(delay)
    assert gauge._value.get() == 0.5
    probe.observe(0.03)
    assert gauge._value.get() == 0.5  # still one of the last three
    probe.observe(0.04)  # 0.5 has left the three-sample window
    assert gauge._value.get() == 0.04


async def test_a_loop_held_by_blocking_code_shows_as_lag():
    gauge = _gauge()
    probe = LoopLagProbe(gauge, interval_seconds=0.02, window_seconds=1.0)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    time.sleep(0.3)  # holds the loop as a long batch would
    await asyncio.sleep(0.05)
    task.cancel()
    assert gauge._value.get() >= 0.25
