"""AckAfterWrite: a batch is acknowledged only after its write returned, in order, and never half."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.sink.ack_after_write import AckAfterWrite


def event(offset: int):
    return SimpleNamespace(message=SimpleNamespace(topic="t", partition=0, offset=offset, value=b"{}",
                                                   headers=[], key=None))


class GatedWriter:
    """Writes only when released; records what it was given."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.written: list[list[int]] = []
        self.trials = 0

    async def write(self, messages) -> None:
        await self.release.wait()
        self.written.append([m.source.offset for m in messages])

    async def try_half_open_breaker(self) -> None:
        self.trials += 1


async def test_events_are_acknowledged_only_after_their_batch_is_written_in_order():
    writer, acked, progress = GatedWriter(), [], []

    async def ack(e) -> None:
        acked.append(e.message.offset)

    async with AckAfterWrite(writer, ack=ack, on_acked=lambda: progress.append(len(acked))) as sink:
        await sink.submit([event(0), event(1)])
        await sink.submit([event(2)])
        await asyncio.sleep(0.05)
        assert acked == [], "nothing may be acknowledged before the write returned"
        writer.release.set()
        for _ in range(100):
            if len(acked) == 3:
                break
            await asyncio.sleep(0.01)
    assert writer.written == [[0, 1], [2]]
    assert acked == [0, 1, 2]
    assert progress == [2, 3]


async def test_a_batch_still_being_written_at_close_is_not_acknowledged():
    writer, acked = GatedWriter(), []

    async def ack(e) -> None:
        acked.append(e)

    async with AckAfterWrite(writer, ack=ack) as sink:
        await sink.submit([event(0)])
        await asyncio.sleep(0.05)
    assert acked == []
    assert writer.written == []


async def test_an_idle_sink_gives_the_half_open_breaker_its_trials(monkeypatch):
    monkeypatch.setattr("app.sink.ack_after_write.BREAKER_TRIAL_INTERVAL_SECONDS", 0.01)
    writer = GatedWriter()

    async def ack(e) -> None:
        pass

    async with AckAfterWrite(writer, ack=ack):
        await asyncio.sleep(0.1)
    assert writer.trials >= 2


async def test_no_ping_trials_while_a_batch_is_being_written(monkeypatch):
    monkeypatch.setattr("app.sink.ack_after_write.BREAKER_TRIAL_INTERVAL_SECONDS", 0.01)
    writer, writing = GatedWriter(), []

    async def ack(e) -> None:
        pass

    async with AckAfterWrite(writer, ack=ack, on_writing=writing.append) as sink:
        await sink.submit([event(0)])
        await asyncio.sleep(0.1)  # the write is held: its own attempt is the trial
        assert writing == [True]
        assert writer.trials == 0
        writer.release.set()
        await asyncio.sleep(0.1)
    assert writing == [True, False]
    assert writer.trials >= 2


async def test_a_write_that_raises_is_no_longer_under_way_and_acknowledges_nothing():
    class FailingWriter(GatedWriter):
        async def write(self, messages) -> None:
            raise RuntimeError("escaped the sink")

    writing, acked = [], []

    async def ack(e) -> None:
        acked.append(e)

    sink = AckAfterWrite(FailingWriter(), ack=ack, on_writing=writing.append)
    with pytest.raises(RuntimeError, match="escaped the sink"):  # raised in the agent, as WriteBehind does
        async with sink:
            await sink.submit([event(0)])
            await asyncio.sleep(0.05)
            await sink.submit([event(1)])
    assert writing == [True, False], "a stall detector must not think a dead write is still under way"
    assert acked == []
