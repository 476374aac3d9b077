"""A circuit breaker for PostgreSQL writes (pure state machine, clock injected).

CLOSED -> OPEN after `failure_threshold` consecutive failures; OPEN -> HALF_OPEN
once `reset_timeout` seconds have passed; HALF_OPEN -> CLOSED after
`success_threshold` successes, or back to OPEN on a failure. Defaults 5 / 60 s / 2
as in the seed's design.
"""

from __future__ import annotations

import enum
import time
from typing import Callable


class State(enum.Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 60.0, success_threshold: int = 2,
                 clock: Callable[[], float] = time.monotonic,
                 on_transition: Callable[[State, State], None] | None = None) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.success_threshold = success_threshold
        self._clock = clock
        self._on_transition = on_transition
        self._state = State.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._move(State.HALF_OPEN)
        return self._state

    def seconds_until_trial(self) -> float:
        """0 when a call may be tried now, else how long until the half-open trial."""
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        if self.state is State.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.success_threshold:
                self._move(State.CLOSED)
        self._failures = 0

    def record_failure(self) -> None:
        state = self.state
        self._failures += 1
        if state is State.HALF_OPEN or (state is State.CLOSED and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._move(State.OPEN)

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        self._failures = 0 if new is not State.OPEN else self._failures
        self._successes = 0
        if self._on_transition and old is not new:
            self._on_transition(old, new)
