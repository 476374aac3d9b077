"""A small chaos run inside the suite (`make chaos` runs 100,000 events)."""

from __future__ import annotations

import asyncio

from chaos import run as chaos


async def test_chaos_run_loses_and_doubles_nothing():
    report = await asyncio.to_thread(chaos.run, 3000, 400)
    print("\n".join(report.lines()))
    assert [name for name, _ in report.faults] == [
        "scale 1 -> 3", "SIGKILL a worker", "poison messages", "PostgreSQL restart", "broker restart", "scale 3 -> 1"]
    assert report.poison and report.failing
    assert (report.lost, report.duplicated, report.table_mismatches, report.dead_letter_mismatches,
            report.status_mismatches, report.audit_gaps) == (0, 0, 0, 0, 0, 0)
    assert report.ok
