from app.circuit_breaker import CircuitBreaker, State


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def breaker(clock, transitions=None):
    return CircuitBreaker(5, 60, 2, clock=clock,
                          on_transition=(lambda a, b: transitions.append((a, b))) if transitions is not None else None)


def test_opens_after_consecutive_failures_only():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record_failure()
    cb.record_success()  # resets the count
    for _ in range(4):
        cb.record_failure()
    assert cb.state is State.CLOSED
    cb.record_failure()
    assert cb.state is State.OPEN
    assert cb.seconds_until_trial() == 60


def test_half_open_after_timeout_then_closed_after_successes():
    clock, transitions = Clock(), []
    cb = breaker(clock, transitions)
    for _ in range(5):
        cb.record_failure()
    clock.now = 59.9
    assert cb.state is State.OPEN
    clock.now = 60
    assert cb.state is State.HALF_OPEN and cb.seconds_until_trial() == 0
    cb.record_success()
    assert cb.state is State.HALF_OPEN
    cb.record_success()
    assert cb.state is State.CLOSED
    assert transitions == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_failure_while_half_open_reopens_for_a_full_timeout():
    clock = Clock()
    cb = breaker(clock)
    for _ in range(5):
        cb.record_failure()
    clock.now = 61
    assert cb.state is State.HALF_OPEN
    cb.record_failure()
    assert cb.state is State.OPEN
    clock.now = 120
    assert cb.state is State.OPEN
    clock.now = 121
    assert cb.state is State.HALF_OPEN
