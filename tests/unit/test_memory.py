"""app.memory: malloc_trim hands freed memory back to the system, and the setting turns it off."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from app import memory
from app.settings import Settings, SettingsError

MB = 1024 * 1024
RELEASED = "timestamp_malloc_trim_released_bytes_total"


def test_trim_gives_back_memory_freed_in_the_middle_of_the_heap():
    malloc_trim = memory.glibc_malloc_trim()
    assert malloc_trim is not None  # Debian's glibc, as in the image
    # 64 MB in 2 KB blocks (over pymalloc's 512 bytes: from malloc), every 32nd kept, so the heap's top
    # does not move and glibc keeps what is freed below it.
    blocks = [bytes(2048) for _ in range(32 * 1024)]
    kept = blocks[::32]
    del blocks
    released_before = REGISTRY.get_sample_value(RELEASED)
    released = memory.trim(malloc_trim)
    assert released > 20 * MB
    assert REGISTRY.get_sample_value(RELEASED) - released_before == released
    assert len(kept) == 1024


class TimerRecordingApp:
    """The one part of faust.App that trim_periodically uses."""

    def __init__(self) -> None:
        self.intervals: list[float] = []

    def timer(self, interval: float):
        self.intervals.append(interval)
        return lambda function: function


def test_the_timer_is_registered_unless_the_interval_is_zero():
    app = TimerRecordingApp()
    assert memory.trim_periodically(app, 0) is False
    assert memory.trim_periodically(app, 60) is True
    assert app.intervals == [60]


@pytest.mark.parametrize("value, expected", [("0", 0.0), ("30", 30.0), ("0.5", 0.5)])
def test_the_interval_may_be_zero(value, expected):
    assert Settings.from_env({"MALLOC_TRIM_INTERVAL_SECONDS": value}).malloc_trim_interval_seconds == expected


def test_a_negative_interval_is_refused_by_name():
    with pytest.raises(SettingsError, match="MALLOC_TRIM_INTERVAL_SECONDS"):
        Settings.from_env({"MALLOC_TRIM_INTERVAL_SECONDS": "-1"})
