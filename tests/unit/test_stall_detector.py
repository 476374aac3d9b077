"""The stall detector: a partition is stalled when its committed offset lags and stays put while the
agent idles, or for long while it works on the others; end offsets come from the broker."""

import asyncio
from types import SimpleNamespace

from app.faust_compat.stalls import BrokerEndOffsets, StallDetector


def test_a_partition_is_stalled_after_two_idle_looks_at_the_same_committed_offset():
    stalls = StallDetector(idle_seconds=0)
    assert stalls.stalled({"p0": 5, "p1": 9}, {"p0": 8, "p1": 9}) == {}  # first look: nothing to compare
    assert stalls.stalled({"p0": 5, "p1": 9}, {"p0": 8, "p1": 9}) == {"p0": 5}  # p1 is at its end


def test_progress_or_a_moving_offset_is_no_stall():
    stalls = StallDetector(idle_seconds=60)
    stalls.stalled({"p0": 5}, {"p0": 8})
    assert stalls.stalled({"p0": 5}, {"p0": 8}) == {}  # the agent worked within the idle time
    idle = StallDetector(idle_seconds=0)
    idle.stalled({"p0": 5}, {"p0": 8})
    assert idle.stalled({"p0": 6}, {"p0": 8}) == {}


def test_after_a_reset_a_stall_must_be_seen_anew():
    stalls = StallDetector(idle_seconds=0)
    stalls.stalled({"p0": 0}, {"p0": 8})
    stalls.reset()  # a rebalance happened: offsets seen before it prove nothing
    assert stalls.stalled({"p0": 0}, {"p0": 8}) == {}
    assert stalls.stalled({"p0": 0}, {"p0": 8}) == {"p0": 0}


def test_a_batch_being_written_is_no_stall_however_long_it_takes():
    stalls = StallDetector(idle_seconds=0)
    stalls.writing(True)  # PostgreSQL away: the batch waits, offsets stay put
    stalls.stalled({"p0": 5}, {"p0": 8})
    assert stalls.stalled({"p0": 5}, {"p0": 8}) == {}
    stalls.writing(False)  # the write ended, written or raised
    assert stalls.stalled({"p0": 5}, {"p0": 8}) == {"p0": 5}


def test_a_partition_not_delivered_is_stalled_while_the_agent_works_on_others():
    stalls = StallDetector(idle_seconds=5, starved_seconds=30)
    stalls.stalled({"p0": 5, "p1": 7}, {"p0": 8, "p1": 9}, now=100)
    for now in (110, 120):
        stalls.progressed()  # batches from other partitions keep being acknowledged: never idle
        assert stalls.stalled({"p0": 5, "p1": 7 + now}, {"p0": 8, "p1": 500}, now=now) == {}
    stalls.progressed()
    assert stalls.stalled({"p0": 5, "p1": 200}, {"p0": 8, "p1": 500}, now=130) == {"p0": 5}
    # Judged again only after another full wait, not at every look.
    assert stalls.stalled({"p0": 5, "p1": 201}, {"p0": 8, "p1": 500}, now=135) == {}


def test_a_starved_partition_being_written_or_moving_is_no_stall():
    stalls = StallDetector(idle_seconds=60, starved_seconds=30)
    stalls.stalled({"p0": 5}, {"p0": 8}, now=0)
    stalls.writing(True)
    assert stalls.stalled({"p0": 5}, {"p0": 8}, now=40) == {}
    stalls.writing(False)
    assert stalls.stalled({"p0": 6}, {"p0": 8}, now=80) == {}  # it moved: the wait starts again
    assert stalls.stalled({"p0": 6}, {"p0": 8}, now=100) == {}
    assert stalls.stalled({"p0": 6}, {"p0": 8}, now=110) == {"p0": 6}


class _Consumer:
    def __init__(self, answer):
        self.answer = answer
        self.asked = 0

    async def highwaters(self, *tps):
        self.asked += 1
        return await self.answer(tps)


def _app(answer) -> SimpleNamespace:
    return SimpleNamespace(consumer=_Consumer(answer), monitor=SimpleNamespace(tp_end_offsets={"p0": 3}))


async def test_end_offsets_come_from_the_broker():
    async def answer(tps):
        return {tp: 9 for tp in tps}

    app = _app(answer)
    assert await BrokerEndOffsets(app).get(["p0", "p1"], timeout=1) == {"p0": 9, "p1": 9}


async def test_a_broker_that_does_not_answer_gets_one_question_and_the_fetchers_view_is_used():
    never = asyncio.Event()

    async def answer(tps):
        await never.wait()

    app = _app(answer)
    ends = BrokerEndOffsets(app)
    for _ in range(3):
        assert await ends.get(["p0", "p1"], timeout=0.01) == {"p0": 3, "p1": 0}
    assert app.consumer.asked == 1


async def test_a_failed_question_falls_back_and_the_next_tick_asks_again():
    async def answer(tps):
        raise ConnectionError("broker away")

    app = _app(answer)
    ends = BrokerEndOffsets(app)
    assert await ends.get(["p0"], timeout=1) == {"p0": 3}
    assert await ends.get(["p0"], timeout=1) == {"p0": 3}
    assert app.consumer.asked == 2
