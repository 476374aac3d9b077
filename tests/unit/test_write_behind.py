"""WriteBehind: batches written one at a time, in order, behind the loop that collects them."""

from __future__ import annotations

import asyncio

import pytest

from app.sink.write_behind import WriteBehind


async def test_batches_are_written_in_order_one_at_a_time_while_the_next_is_collected():
    written, active, most_active = [], 0, 0
    release = asyncio.Event()

    async def write(batch):
        nonlocal active, most_active
        active += 1
        most_active = max(most_active, active)
        await release.wait()
        written.append(batch)
        active -= 1

    writer = WriteBehind(write)
    await writer.submit([1])  # taken by the writer at once
    await asyncio.sleep(0)
    await writer.submit([2])  # queued: returns, so the caller can collect the next
    third = asyncio.create_task(writer.submit([3]))
    await asyncio.sleep(0.05)
    assert not third.done(), "a third batch must wait while one is written and one queued"
    assert written == []
    release.set()
    await third
    for _ in range(100):
        if len(written) == 3:
            break
        await asyncio.sleep(0.01)
    assert written == [[1], [2], [3]]
    assert most_active == 1
    await writer.close()


async def test_an_error_of_the_writer_is_raised_to_the_caller_and_later_batches_are_not_written():
    written = []

    async def write(batch):
        if batch == ["bad"]:
            raise RuntimeError("boom")
        written.append(batch)

    writer = WriteBehind(write)
    with pytest.raises(RuntimeError, match="boom"):
        for batch in (["bad"], ["a"], ["b"], ["c"]):
            await writer.submit(batch)
    assert written == []
    await writer.close()


async def test_close_cancels_the_batch_being_written():
    started, finished = asyncio.Event(), []

    async def write(batch):
        started.set()
        await asyncio.sleep(60)
        finished.append(batch)

    writer = WriteBehind(write)
    await writer.submit([1])
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(writer.close(), 5)
    assert finished == []
